"""The Core ML pack step: the LLM as one multifunction package, and a tied table stored once.

``coremltools.utils.save_multifunction`` stores a constant once however many of the package's functions use
it, so the bundle's pack step gathers into ``llm.mlpackage`` what shares weights:

- ``llm_prefill`` + ``llm_decode`` (converted as two packages with the same states) become the functions
  ``prefill`` and ``decode``: two packages would ship the LLM twice.
- A tied LLM (``tie_word_embeddings``: Qwen2.5's 151,936 × 896 table, 272 MB in fp16) holds its table as
  ``embed``'s gather and as the head's linear weight. ``embed`` joins the package as the function ``embed``
  where that stores its table once: where the joined package is smaller than the two apart by at least half
  of ``embed``'s bytes, measured on the saved package (an untied lookup, or a table compressed unlike the
  head, keeps its own package). Its manifest entry then lists ``llm.mlpackage`` and the function as its one
  method.

The host loads each function with ``MLModelConfiguration.functionName`` (coremltools: ``function_name``).
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path
from typing import Any

from xsam_edge.backends.coreml.export import spec_signature
from xsam_edge.files import write_atomically
from xsam_edge.spec.bundle import GraphEntry

__all__ = ["LLM_FUNCTIONS", "function_signatures", "join_tied_embed", "merge_llm_functions", "pack_llm"]

# the multifunction LLM package: function name → the stateful graph it is converted from (first: default)
LLM_FUNCTIONS = {"prefill": "llm_prefill", "decode": "llm_decode"}
EMBED = "embed"  # the lookup graph, and its function's name once it joins the LLM package
MIN_SAVED_FRACTION = 0.5  # embed joins the LLM package where that saves at least this part of its bytes


def pack_llm(
    entries: list[GraphEntry], root: Path, multifunction: bool = True, tied_embed: bool = True
) -> list[GraphEntry]:
    """The bundle's pack step: the LLM as one multifunction package, a tied ``embed`` inside it.

    Args:
        entries (list[GraphEntry]): a bundle's entries (files relative to ``root``).
        root (Path): the bundle (or staging) folder.
        multifunction (bool): off, the two single-function LLM packages stay (``coremltools.optimize`` takes
            only those: quantization's float export).
        tied_embed (bool): off, ``embed`` keeps its own package.
    """
    packed = merge_llm_functions(entries, root) if multifunction else entries
    return join_tied_embed(packed, root) if tied_embed else packed


def function_signatures(spec: Any) -> dict[str, dict[str, list[tuple[str, tuple[int, ...], str]]]]:
    """Per function of a multifunction spec: its inputs, outputs and states (as ``spec_signature`` gives)."""
    signatures = {}
    for function in spec.description.functions:
        single = type(spec)()
        single.description.input.extend(function.input)
        single.description.output.extend(function.output)
        single.description.state.extend(function.state)
        signatures[function.name] = spec_signature(single)
    return signatures


def _bytes(package: Path) -> int:
    return sum(f.stat().st_size for f in package.rglob("*") if f.is_file())


def _signatures_json(signatures: dict[str, Any]) -> dict[str, Any]:
    """JSON-shaped, so an entry read back from a manifest equals the one written."""
    return {
        fn: {k: [[n, list(shape), dtype] for n, shape, dtype in v] for k, v in sig.items()}
        for fn, sig in signatures.items()
    }


def _check_functions(out: Path, sources: dict[str, Path]) -> dict[str, Any]:
    """Each function of the saved package against the package it came from; its signatures.

    Raises:
        RuntimeError: a function does not have the signature of its source package.
    """
    import coremltools as ct

    signatures = function_signatures(ct.models.MLModel(str(out), skip_model_load=True).get_spec())
    for function, package in sources.items():
        source = spec_signature(ct.models.MLModel(str(package), skip_model_load=True).get_spec())
        if signatures.get(function) != source:
            raise RuntimeError(f"{out.name}: function {function!r} does not match {package.name}")
    return signatures


def merge_llm_functions(entries: list[GraphEntry], root: Path) -> list[GraphEntry]:
    """Ship the Core ML LLM as one multifunction package: ``llm_prefill`` + ``llm_decode`` → ``llm``.

    Compressed weights are stored once too: merge after ``coremltools.optimize``, which refuses multifunction
    models. The two packages are replaced by ``llm.mlpackage`` beside them; the new entry lists the
    functions as ``methods`` (as ExecuTorch's ``llm`` program does), and its placement records the bytes
    before and after and each function's signature read back from the saved spec.

    Args:
        entries (list[GraphEntry]): a bundle's entries (files relative to ``root``); other backends and
            graphs pass through unchanged, and without both stateful Core ML LLM entries nothing changes.
        root (Path): the bundle (or staging) folder the entries' files are relative to.

    Returns:
        list[GraphEntry]: the entries with the two Core ML LLM entries replaced by one ``llm`` entry.

    Raises:
        RuntimeError: a function of the saved package does not have the signature of its source package.
    """
    sources = {e.name: e for e in entries if e.backend == "coreml" and e.name in LLM_FUNCTIONS.values()}
    if len(sources) != len(LLM_FUNCTIONS):
        return entries
    import coremltools as ct

    packages = {fn: root / sources[graph].files[0] for fn, graph in LLM_FUNCTIONS.items()}
    out = packages["prefill"].parent / "llm.mlpackage"
    bytes_before = sum(_bytes(p) for p in packages.values())
    descriptor = ct.utils.MultiFunctionDescriptor()
    for function, package in packages.items():
        descriptor.add_function(str(package), "main", function)
    descriptor.default_function_name = next(iter(LLM_FUNCTIONS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_atomically(out.parent, lambda tmp: ct.utils.save_multifunction(descriptor, str(tmp / out.name)))
    signatures = _check_functions(out, packages)
    for package in packages.values():
        shutil.rmtree(package)
    first = sources[LLM_FUNCTIONS["prefill"]]
    placement = {
        **first.placement,
        "file": str(out),
        "file_bytes": _bytes(out),
        "bytes_before_merge": bytes_before,
        "functions": _signatures_json(signatures),
    }
    merged = dataclasses.replace(
        first,
        name="llm",
        files=[str(out.relative_to(root))],
        methods=[
            {"name": fn, "inputs": sources[g].inputs, "outputs": sources[g].outputs}
            for fn, g in LLM_FUNCTIONS.items()
        ],
        route=f"{first.route}+save_multifunction",
        parity=[],
        placement=placement,
    )
    merged_ids = {id(e) for e in sources.values()}
    at = min(i for i, e in enumerate(entries) if id(e) in merged_ids)
    kept = [e for e in entries if id(e) not in merged_ids]
    return [*kept[:at], merged, *kept[at:]]


def join_tied_embed(entries: list[GraphEntry], root: Path) -> list[GraphEntry]:
    """``embed.mlpackage`` joins ``llm.mlpackage`` as its function ``embed`` where that stores a table once.

    Args:
        entries (list[GraphEntry]): a bundle's entries (files relative to ``root``); without a Core ML
            ``embed`` package and a merged ``llm`` package nothing changes.
        root (Path): the bundle (or staging) folder.

    Returns:
        list[GraphEntry]: the entries; where joined, ``embed`` lists ``llm.mlpackage`` and the method
        ``embed``, and ``llm``'s placement has the new bytes and the function's signature.

    Raises:
        RuntimeError: a function of the saved package does not have the signature of its source package.
    """
    by_name = {e.name: e for e in entries if e.backend == "coreml"}
    embed, llm = by_name.get(EMBED), by_name.get("llm")
    if embed is None or llm is None or embed.methods or not llm.methods:
        return entries
    import coremltools as ct

    package, source = root / llm.files[0], root / embed.files[0]
    llm_bytes, embed_bytes = _bytes(package), _bytes(source)
    descriptor = ct.utils.MultiFunctionDescriptor(str(package))
    descriptor.add_function(str(source), "main", EMBED)
    descriptor.default_function_name = next(iter(LLM_FUNCTIONS))  # as merge_llm_functions set it

    def save(tmp: Path) -> int:
        """The joined package's saving in bytes; where too small, nothing is left to move into place."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ct.utils.save_multifunction(descriptor, str(tmp / package.name))
        saved = llm_bytes + embed_bytes - _bytes(tmp / package.name)
        if saved < MIN_SAVED_FRACTION * embed_bytes:
            shutil.rmtree(tmp / package.name)
        return saved

    moved, saved = write_atomically(package.parent, save)
    if not moved:
        return entries
    signatures = _check_functions(package, {EMBED: source})
    shutil.rmtree(source)
    joined_llm = dataclasses.replace(
        llm,
        placement={
            **llm.placement,
            "file_bytes": _bytes(package),
            "functions": {
                **llm.placement.get("functions", {}),
                **_signatures_json({EMBED: signatures[EMBED]}),
            },
            "tied_embed_bytes_saved": saved,
        },
    )
    joined_embed = dataclasses.replace(
        embed,
        files=list(llm.files),
        methods=[{"name": EMBED, "inputs": embed.inputs, "outputs": embed.outputs}],
        route=f"{embed.route}+save_multifunction",
        placement={**embed.placement, "file": str(package), "stored_in": llm.files[0], "file_bytes": 0},
    )
    swap = {id(embed): joined_embed, id(llm): joined_llm}
    return [swap.get(id(e), e) for e in entries]
