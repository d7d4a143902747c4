"""Reference data for the native runtime's tests, made by the Python runtime (run with the project's venv).

    python native/tools/dump_reference.py OUT [--bundle DIR]

OUT/bundle        the tiny preset (random weights, grid sampler) exported for ExecuTorch, unless --bundle
OUT/parity        requests of every task (requests.json, PNGs) and EdgeSession's answers (expected.json)
OUT/tokenizers    tokenizer.json files (the bundle's word-level one, Qwen- and GPT-2-style byte-level BPEs,
                  Phi-3-style SentencePiece BPEs) and cases.json: the `tokenizers` package's ids and decodings
OUT/preprocess    images of awkward sizes and the spec's letterbox / global / prompt-mask arrays (arrays.npz)
OUT/postprocess   seeded decoder logits (logits.npz) and spec/postprocess.py's results for every task
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2] / "tests"))  # conftest: the tiny model with visible random weights

from xsam_edge.spec.config import TokenConfig  # noqa: E402
from xsam_edge.spec.golden import prompt_to_json  # noqa: E402
from xsam_edge.spec.preprocess import PreprocessSpec  # noqa: E402
from xsam_edge.spec.prompts import build_prompt  # noqa: E402
from xsam_edge.spec.types import Box, MaskPrompt, Point, Scribble, SegmentationRequest, Task  # noqa: E402

QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
    r"\s+(?!\S)|\s+"
)
TEXTS = [
    "the small green triangle left of the ring",
    "Hello, World! I'm here; we'LL see: it's 2024-12-05 at 10:30.",
    "  leading and   inner spaces\n\nnew lines\ttabs  ",
    "naïve café, Größe, ÆØÅ, señor",
    "日本語のテキストと한국어",
    "emoji 🙂🚀 and symbols ©®™ ∑∫√",
    "numbers 1234567 and 3.14159, x=42",
    "CAPS and MiXeD CaSe: THE RED CIRCLE?",
    "<p>red circle</p> and <SEG> tokens",
]


def every_task_requests(image: np.ndarray) -> list[SegmentationRequest]:
    """One or two requests per task; prompt coordinates are laid out for 80 x 48 and scaled to the image."""
    h, w = image.shape[:2]

    def xy(x: float, y: float) -> tuple[float, float]:
        return x * w / 80, y * h / 48

    mask = np.zeros((h, w), bool)
    mask[round(5 * h / 48) : round(20 * h / 48), round(10 * w / 80) : round(40 * w / 80)] = True
    return [
        SegmentationRequest(image, Task.REFERRING, text="the red circle"),
        SegmentationRequest(image, Task.REASONING, text="the shape with the most corners"),
        SegmentationRequest(image, Task.PANOPTIC, categories=["circle", "square", "sky"]),
        SegmentationRequest(
            image, Task.PANOPTIC, categories=["square", "sand"]
        ),  # the teacher keeps one here
        SegmentationRequest(image, Task.INSTANCE, categories=["circle", "square"]),
        SegmentationRequest(image, Task.SEMANTIC, categories=["circle", "sky"]),
        SegmentationRequest(image, Task.OPEN_VOCABULARY, categories=["ring", "hexagon"]),
        SegmentationRequest(
            image, Task.INTERACTIVE, prompts=[Point(*xy(30, 20)), Box(*xy(5, 5), *xy(40, 30))]
        ),
        SegmentationRequest(
            image,
            Task.INTERACTIVE,
            prompts=[Scribble((xy(2, 2), xy(30, 20))), MaskPrompt(mask), Point(*xy(60, 10))],
        ),  # 3 prompts for 2 region slots: the session batches
        SegmentationRequest(image, Task.VISUAL_GROUNDED, prompts=[Point(*xy(40, 24))]),
        SegmentationRequest(
            image, Task.VISUAL_GROUNDED, prompts=[Box(*xy(2, 3), *xy(30, 40)), Point(*xy(70, 8))]
        ),
        SegmentationRequest(image, Task.GCG),
        SegmentationRequest(image, Task.CHAT, text="how many objects are there?"),
    ]


def rle(mask: np.ndarray) -> list[int]:
    flat = mask.ravel().astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if flat.size == 0 or flat[0] == 0 else [0, *runs]


def dump_parity(bundle: Path, out: Path, image_file: Path | None = None) -> None:
    from conftest import make_image

    from xsam_edge.runtime.session import EdgeSession
    from xsam_edge.spec.image_io import load_image

    out.mkdir(parents=True, exist_ok=True)
    image = make_image() if image_file is None else load_image(image_file)
    Image.fromarray(image).save(out / "image.png")
    from xsam_edge.runtime.observe import observe

    session = EdgeSession(bundle, "executorch")
    entries, expected, rows = [], [], [0]

    def count_rows(name: str, inputs: list, outputs: list, seconds: float) -> None:
        rows[0] += int(inputs[0].shape[1]) if name == "llm" else 0

    observe(session, count_rows)
    for i, request in enumerate(every_task_requests(image)):
        prompts = []
        for j, prompt in enumerate(request.prompts):
            mask_file = None
            if isinstance(prompt, MaskPrompt):
                mask_file = f"prompt_{i}_{j}.png"
                Image.fromarray(np.asarray(prompt.mask, np.uint8) * 255).save(out / mask_file)
            prompts.append(prompt_to_json(prompt, mask_file))
        entries.append(
            {
                "task": request.task.value,
                "text": request.text,
                "categories": request.categories,
                "prompts": prompts,
                "image": "image.png",
            }
        )
        rows[0] = 0
        result = session.segment(request)
        expected.append(
            {
                "labels": result.labels,
                "label_ids": [int(v) for v in result.label_ids],
                "scores": [float(v) for v in result.scores],
                "text": result.text,
                "rle": [rle(m) for m in result.masks],
                "height": int(image.shape[0]),
                "width": int(image.shape[1]),
                "llm_rows": rows[0],  # rows given to the LLM, padding included: the call pattern
            }
        )
    (out / "requests.json").write_text(json.dumps({"version": 1, "requests": entries}, indent=1))
    (out / "expected.json").write_text(json.dumps({"answers": expected}, indent=1))


def _train(tok, texts: list[str], vocab_size: int, special: list[str], alphabet: list[str]):
    from tokenizers import trainers

    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(texts * 3, trainer)
    return tok


def tokenizer_files(bundle: Path) -> dict[str, str]:
    """Tokenizer files by name: the bundle's word-level one and BPE styles trained on the corpus."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    corpus = TEXTS + [
        build_prompt(t, text="the red circle", categories=["circle", "sky"], num_regions=2) for t in Task
    ]
    files = {"word_level": (bundle / "tokenizer.json").read_text()}

    qwen = Tokenizer(models.BPE())
    qwen.normalizer = normalizers.NFC()
    qwen.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    qwen.decoder = decoders.ByteLevel()
    _train(
        qwen,
        corpus,
        700,
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        pre_tokenizers.ByteLevel.alphabet(),
    )
    files["qwen_style_bpe"] = qwen.to_str()

    gpt2 = Tokenizer(models.BPE())
    gpt2.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    gpt2.decoder = decoders.ByteLevel()
    _train(gpt2, corpus, 600, ["<|endoftext|>"], pre_tokenizers.ByteLevel.alphabet())
    files["gpt2_style_bpe"] = gpt2.to_str()

    # SentencePiece-style (Phi-3 / Llama): ▁ for spaces, byte fallback for characters outside the vocab
    special = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
    for name, metaspace in (("phi3_style_legacy", False), ("phi3_style_metaspace", True)):
        base = Tokenizer(models.BPE(unk_token="<unk>"))
        base.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement="\u2581", prepend_scheme="first", split=False
        )
        _train(base, [t for t in corpus if not any(ord(c) > 0x3000 for c in t)], 500, special, [])
        data = json.loads(base.to_str())
        vocab = data["model"]["vocab"]
        for b in range(256):
            vocab.setdefault(f"<0x{b:02X}>", len(vocab))
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in data["model"]["merges"]]
        tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tok.add_special_tokens(special)
        if metaspace:
            tok.pre_tokenizer = pre_tokenizers.Metaspace(
                replacement="\u2581", prepend_scheme="first", split=False
            )
            tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
        else:
            tok.normalizer = normalizers.Sequence(
                [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")]
            )
            tok.decoder = decoders.Sequence(
                [
                    decoders.Replace("\u2581", " "),
                    decoders.ByteFallback(),
                    decoders.Fuse(),
                    decoders.Strip(" ", 1, 0),
                ]
            )
        files[name] = tok.to_str()
    return files


def dump_tokenizers(bundle: Path, out: Path) -> None:
    from tokenizers import Tokenizer

    out.mkdir(parents=True, exist_ok=True)
    strings = TEXTS + [
        build_prompt(t, text="the red circle", categories=["circle", "sky"], num_regions=2, template=tpl)
        for t in Task
        for tpl in ("phi3_chat", "qwen_chat")
    ]
    strings += ["\n", " ", "<|user|>\n", "<|im_start|>user\n", "a", ""]
    cases = []
    for name, text in tokenizer_files(bundle).items():
        (out / f"{name}.json").write_text(text)
        tok = Tokenizer.from_str(text)
        for s in strings:
            ids = tok.encode(s, add_special_tokens=False).ids
            cases.append(
                {
                    "tokenizer": f"{name}.json",
                    "text": s,
                    "ids": ids,
                    "decoded": tok.decode(ids, skip_special_tokens=False),
                    "decoded_skip": tok.decode(ids, skip_special_tokens=True),
                }
            )
    (out / "cases.json").write_text(json.dumps({"cases": cases}, indent=1, ensure_ascii=False))


def dump_preprocess(bundle: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    spec = PreprocessSpec.from_dict(manifest["preprocess"])
    rng = np.random.default_rng(0)
    arrays, cases = {}, []
    for i, (h, w) in enumerate([(23, 37), (61, 200), (300, 5), (128, 128), (480, 640), (97, 3)]):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(out / f"image_{i}.png")
        pixels, scaled = spec.letterbox(image)
        arrays[f"letterbox_{i}"] = pixels
        arrays[f"global_{i}"] = spec.global_pixels(image)
        prompts = [
            Point(w / 3, h / 2),
            Box(w * 0.1, h * 0.2, w * 0.7, h * 0.9),
            Scribble(((0.5, 0.5), (w - 1.5, h - 1.5), (w / 2, 0.2))),
        ]
        arrays[f"prompt_masks_{i}"] = spec.prompt_masks(prompts, (h, w))
        arrays[f"prompt_boxes_{i}"] = np.array([spec.prompt_box(p, (h, w)) for p in prompts], np.float64)
        cases.append(
            {
                "image": f"image_{i}.png",
                "scaled_hw": list(scaled),
                "prompts": [prompt_to_json(p) for p in prompts],
            }
        )
    np.savez_compressed(out / "arrays.npz", **arrays)
    (out / "cases.json").write_text(
        json.dumps({"preprocess": manifest["preprocess"], "cases": cases}, indent=1)
    )


def dump_postprocess(out: Path) -> None:
    """Every task's post-processing on seeded logits that keep queries.

    A random model's queries rarely pass panoptic's 0.8 threshold, so these are made to; the geometries
    make both the letterbox crop and the final resize non-trivial.
    """
    from xsam_edge.spec.geometry import Geometry
    from xsam_edge.spec.postprocess import postprocess

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    arrays, cases = {}, []
    tasks = [
        (Task.REFERRING, ["the red circle"]),
        (Task.GCG, ["a ring", "two squares", "the sky"]),
        (Task.PANOPTIC, ["circle", "square", "sky"]),
        (Task.OPEN_VOCABULARY, ["ring", "grass"]),
        (Task.INSTANCE, ["circle", "square", "star"]),
        (Task.SEMANTIC, ["circle", "sky", "grass", "wall"]),
        (Task.VISUAL_GROUNDED, ["prompt 0", "prompt 1"]),
        (Task.INTERACTIVE, ["prompt 0", "prompt 1", "prompt 2"]),
    ]
    for i, (task, labels) in enumerate(tasks):
        q, m = 12, 16
        h, w = [(37, 53), (61, 29), (40, 40), (23, 70)][i % 4]
        geometry = Geometry.for_image((h, w), 64)
        cls = rng.normal(0, 2, (q, len(labels) + 1)).astype(np.float32)
        cls[: q // 2, -1] -= 6  # half the queries confidently not background
        cls[np.arange(q // 2), rng.integers(0, len(labels), q // 2)] += 6
        # one blob per query on a noisy negative background: panoptic keeps the ones that do not overlap
        masks = rng.normal(-5, 1, (q, m, m)).astype(np.float32)
        for k in range(q):
            y0, x0 = rng.integers(0, m - 4, 2)
            masks[k, y0 : y0 + rng.integers(3, 8), x0 : x0 + rng.integers(3, 8)] += 10
        boxes = [(float(b), float(b), float(b + w // 2), float(b + h // 2)) for b in range(len(labels))]
        result = postprocess(
            task,
            cls,
            masks,
            geometry,
            labels=labels,
            prompt_boxes=boxes if task is Task.INTERACTIVE else None,
        )
        arrays[f"class_logits_{i}"] = cls
        arrays[f"mask_logits_{i}"] = masks
        cases.append(
            {
                "task": task.value,
                "labels": labels,
                "prompt_boxes": boxes,
                "image_hw": [h, w],
                "scaled_hw": list(geometry.scaled_hw),
                "input_size": 64,
                "expected": {
                    "labels": result.labels,
                    "label_ids": [int(v) for v in result.label_ids],
                    "scores": [float(v) for v in result.scores],
                    "rle": [rle(mk) for mk in result.masks],
                },
            }
        )
    np.savez(out / "logits.npz", **arrays)
    (out / "cases.json").write_text(json.dumps({"cases": cases}, indent=1))


def export_tiny(out: Path) -> Path:
    from conftest import make_tiny_model, with_grid_sampler

    from xsam_edge.export.graphs import SlotConfig
    from xsam_edge.export.to_bundle import export_bundle
    from xsam_edge.spec.tokenizer import tiny_tokenizer

    # tied, as Qwen2.5's: embed.pte and llm.pte then read the table from the one llm.ptd (the C++ core's
    # Module over a data file, backends/executorch/pack.py)
    model = with_grid_sampler(make_tiny_model(0, tied=True))
    slots = SlotConfig(max_regions=2, max_conditions=4, prefill_len=16)
    path, _ = export_bundle(model, tiny_tokenizer(), out, ("executorch",), slots, progress=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--bundle", help="use this ExecuTorch bundle instead of exporting the tiny preset")
    parser.add_argument("--image", help="parity requests on this image (default: the tests' 80 x 48 image)")
    args = parser.parse_args()
    out = Path(args.out)
    bundle = Path(args.bundle) if args.bundle else export_tiny(out / "bundle")
    dump_parity(bundle, out / "parity", Path(args.image) if args.image else None)
    dump_tokenizers(bundle, out / "tokenizers")
    dump_preprocess(bundle, out / "preprocess")
    dump_postprocess(out / "postprocess")
    assert TokenConfig().template == "phi3_chat"
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
