"""Run by tests/test_align_ddp.py under `torchrun --nproc_per_node 2`: train, then dump this rank's weights hash.

argv: encoder backbone prompts out_dir [straight|stop|resume]
"""
import hashlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _align_tiny import tiny_config  # noqa: E402

from x2i_core.align.trainer import run_alignment  # noqa: E402

world = {"encoder": sys.argv[1], "backbone": sys.argv[2], "prompts": sys.argv[3]}
out = Path(sys.argv[4])
mode = sys.argv[5] if len(sys.argv) > 5 else "straight"
extra = {"straight": {}, "stop": {"stop_after": 2}, "resume": {"resume": "latest"}}[mode]
torch.set_num_threads(1)
result = run_alignment(tiny_config(world, out, steps=4, checkpoint_every=2, grad_accum=2, **extra))
state = result.alignnet.state_dict()
digest = hashlib.sha256(b"".join(state[k].detach().cpu().contiguous().numpy().tobytes() for k in sorted(state))).hexdigest()
(out.parent / f"hash-{mode}-rank{result.rank}.txt").write_text(f"{digest} {result.world_size} {result.step}\n")
