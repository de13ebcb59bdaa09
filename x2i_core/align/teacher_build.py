"""`x2i align --precompute-teacher`: encode a corpus with the backbone's own text encoders, once, into a
TeacherCache folder (teacher_cache.py reads it)."""
from __future__ import annotations

from pathlib import Path

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..limits import MAX_TEXT_TOKENS, check_range
from ..outputs import check_output_dir, follow_umask
from ..training.accelerator import make_accelerator
from .components import load_backbone, transformer_dtype
from .data import PromptStream, read_prompts
from .teacher_cache import merge_indexes, precompute_teacher


def build_teacher_cache(cfg, out_dir: str | Path, batch_size: int = 8, shard_size: int = 1024) -> int:
    """`x2i align --precompute-teacher DIR`: encode every prompt of cfg.data once (all ranks share the work)."""
    check_output_dir(out_dir, "--precompute-teacher")  # before the teacher loads
    check_range("--teacher-max-length", cfg.teacher_max_length, 1, MAX_TEXT_TOKENS, " tokens")
    accelerator = make_accelerator(cfg)
    stream = PromptStream.from_specs(cfg.data if not isinstance(cfg.data, str) else [cfg.data], text_key=cfg.text_key)
    backbone = load_backbone(cfg, accelerator.device)
    teacher = backbone.load_teacher()
    prompts = (p for path in stream.files for p in read_prompts(path, cfg.text_key))
    describe = {"backbone": cfg.backbone, "backbone_path": cfg.backbone_path, "backbone_identity": backbone.identity,
                "teacher_max_length": cfg.teacher_max_length}
    # a corpus can take hours: show a count (rank 0 counts its own share)
    with Progress(TextColumn("teacher cache"), SpinnerColumn(), TextColumn("{task.completed} prompts"),
                  TimeElapsedColumn(), disable=not (cfg.progress and accelerator.is_main_process)) as bar:
        task = bar.add_task("encode", total=None)
        precompute_teacher(teacher, prompts, out_dir, batch_size=batch_size, shard_size=shard_size,
                           rank=accelerator.process_index, world_size=accelerator.num_processes,
                           dtype=transformer_dtype(backbone), describe=describe,
                           on_batch=lambda n: bar.advance(task, n))
    accelerator.wait_for_everyone()
    total = merge_indexes(out_dir) if accelerator.is_main_process else 0
    if accelerator.is_main_process:  # safetensors writes its shards 0600: follow the umask instead
        follow_umask(p for p in Path(out_dir).iterdir() if p.is_file())
    accelerator.wait_for_everyone()
    return total
