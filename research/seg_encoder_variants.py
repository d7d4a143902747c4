"""Student seg encoders: distil ``shapes-student`` with each image-side option; accuracy against MACs.

Run: ``python -m research.seg_encoder_variants --variant vit:sam-vit:128 --variant conv:conv:128:2
[--variant NAME:KIND:IMAGE_SIZE[:GLOBAL_BLOCKS]] [--losses feature,embed,logit,output,gt] [--steps 1400]
[--seed 0] [--threads 1] [--out PATH]``.

Why (#35 item 5): at full size the SAM ViT is over half of a student's MACs (151 of 279 G for
``x-sam-student-s``), and its global attention over 4,096 tokens is most of that. The options are a conv /
hybrid encoder (``SegEncoderConfig.kind = "conv"``: depthwise-conv blocks, global attention only at the
0-based blocks listed, none for an empty list) and a lower seg resolution (``IMAGE_SIZE`` below the
teacher's 128: the connector then upsamples one step more, so the pyramid and the masks keep their sizes,
and the SAM-side tokens are pooled one step less, so the LLM sees as many). Each variant is ``shapes-student``
with its seg encoder replaced, registered as ``shapes-student-seg-NAME`` for this process, distilled from the
cached teacher into ``outputs/student-variants/seg-NAME-<losses>[-sSTEPS]`` (resumable), then scored on
``--data``; the results file (``research.student_variants``' layout, plus the seg encoder's MACs) is rewritten
after every variant and a variant already in it is not run again.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import time
from pathlib import Path

from benchmarks import RESULTS_DIR
from research.student_variants import (
    DEFAULT_STEPS,
    DEFAULT_TEACHER,
    RunSettings,
    check_same_teacher,
    run_rows,
    score,
)
from xsam_edge.files import atomic_write_text

BASE = "shapes-student"


@dataclasses.dataclass(frozen=True)
class SegVariant:
    """``shapes-student`` with a seg encoder of ``kind`` at ``image_size``.

    ``global_blocks``: the blocks with global attention (None: the base preset's).
    """

    name: str
    kind: str
    image_size: int
    global_blocks: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, text: str) -> SegVariant:
        parts = text.split(":")
        try:
            name, kind, size = parts[:3]
            blocks = None if len(parts) < 4 else tuple(int(b) for b in parts[3].split(",") if b)
            if len(parts) > 4:
                raise ValueError
            return cls(f"seg-{name}", kind, int(size), blocks)
        except ValueError:
            raise ValueError(
                f"--variant {text!r}: write NAME:KIND:IMAGE_SIZE[:GLOBAL_BLOCKS], e.g. conv:conv:128:2"
            ) from None


def register(variant: SegVariant) -> str:
    """Register the variant as a preset of this process; returns its name."""
    from xsam_edge.model import presets

    config = presets.get_preset(BASE)
    teacher = presets.get_preset("shapes-teacher")
    halvings = (teacher.seg_encoder.image_size // variant.image_size).bit_length() - 1
    if variant.image_size << halvings != teacher.seg_encoder.image_size:
        raise ValueError(f"{variant.name}: image size {variant.image_size} is not the teacher's / 2^k")
    seg = dataclasses.replace(config.seg_encoder, kind=variant.kind, image_size=variant.image_size)
    if variant.global_blocks is not None:
        seg = dataclasses.replace(seg, global_attn_indexes=variant.global_blocks)
    connector = dataclasses.replace(
        config.connector, scale_factors=tuple(s * 2**halvings for s in config.connector.scale_factors)
    )
    name = f"{BASE}-{variant.name}"
    presets.PRESETS[name] = dataclasses.replace(
        config,
        name=name,
        seg_encoder=seg,
        connector=connector,
        seg_pool=max(1, config.seg_pool >> halvings),
    )
    return name


def run_variant(variant: SegVariant, settings: RunSettings, data: str, teacher: Path) -> dict:
    """Distil and score one variant; its row of the results file."""
    from xsam_edge.distill.run import distill_run
    from xsam_edge.model.info import info_json
    from xsam_edge.model.presets import get_preset

    preset = register(variant)
    out = settings.folder(variant)
    start = time.perf_counter()
    model_dir = distill_run(
        out=out, student_preset=preset, config=settings.distill_config(preset, out.name), teacher_dir=teacher
    )
    train_s = time.perf_counter() - start
    scores = score(model_dir, preset, data)
    components = info_json(get_preset(preset))["components"]
    return {
        **dataclasses.asdict(variant),
        **settings.row_fields(),
        "macs": scores["macs"],
        "seg_encoder_macs": components["seg_encoder"]["macs"],
        "image_side_macs": sum(
            components[k]["macs"] for k in ("seg_encoder", "seg_connector", "seg_projector", "pixel_decoder")
        ),
        "train_s": train_s,
        "model": str(model_dir),
        "primary": scores["primary"],
    }


def markdown(result: dict) -> str:
    """Per variant: MACs, then each task's metric as the mean over seeds ± half the seed spread."""
    import numpy as np

    teacher = result["teacher"]["primary"]
    tasks = list(teacher)
    by_name: dict[str, list[dict]] = {}
    for row in result["rows"]:
        by_name.setdefault(row["name"], []).append(row)
    lines = [
        "| variant | MACs / query | seg encoder MACs | seeds | "
        + " | ".join(tasks)
        + " | mean share of teacher |",
        "|---" * (len(tasks) + 5) + "|",
        "| teacher | "
        + f"{result['teacher']['macs'] / 1e6:.1f} M | | | "
        + " | ".join(f"{teacher[t]:.2f}" for t in tasks)
        + " | 100 % |",
    ]
    for name, rows in by_name.items():
        cells = []
        for task in tasks:
            values = [r["primary"][task] for r in rows]
            spread = (max(values) - min(values)) / 2
            cells.append(f"{np.mean(values):.2f}" + (f" ± {spread:.2f}" if len(values) > 1 else ""))
        share = np.mean([r["primary"][t] / max(teacher[t], 1e-9) for r in rows for t in tasks])
        lines.append(
            f"| {name} | {rows[0]['macs'] / 1e6:.1f} M | {rows[0]['seg_encoder_macs'] / 1e6:.1f} M | "
            f"{','.join(str(r['seed']) for r in rows)} | " + " | ".join(cells) + f" | {100 * share:.1f} % |"
        )
    return "\n".join(lines)


def main() -> None:
    import torch

    from xsam_edge.training.teacher import ensure_teacher

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True, help="NAME:KIND:IMAGE_SIZE[:BLOCKS]")
    parser.add_argument("--losses", default="feature,embed,logit,output,gt")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=0, help="model init, data order (seed-to-seed noise)")
    parser.add_argument("--data", default="shapes:test")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="results JSON (default results/seg-encoder-variants-<date>.json)")
    args = parser.parse_args()
    try:
        variants = [SegVariant.parse(v) for v in args.variant]
        for variant in variants:  # every spelling and size checked before hours of training
            register(variant)
    except ValueError as err:
        parser.error(str(err))
    torch.set_num_threads(args.threads)
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    out = Path(args.out or RESULTS_DIR / f"seg-encoder-variants-{date}.json")
    recipe_fields = dataclasses.asdict(DEFAULT_TEACHER)
    fresh = {"date": date, "data": args.data, "teacher_recipe": recipe_fields, "rows": []}
    result = json.loads(out.read_text()) if out.is_file() else fresh
    check_same_teacher(result, recipe_fields, out)
    settings = RunSettings(losses=tuple(args.losses.split(",")), steps=args.steps, seed=args.seed)
    teacher = ensure_teacher(DEFAULT_TEACHER)
    run_rows(result, out, teacher, args.data, variants, settings, run_variant)
    atomic_write_text(out.with_suffix(".md"), markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
