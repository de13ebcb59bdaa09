"""Image prompts through `--reason`: the world's MLLM first describes the scene in words, and the hidden states of
its answer (not of the image) condition the student, as `x2i generate --image scene.png --reason "..."` does.

The instruction is the one the MLLM was taught to caption with (mllm_tasks.ASK_EN), asked as training asked it:
the image as one user turn, the instruction as the next. The answer is scored as text too (does it name the
scene's colour and shape?), which tells "the MLLM cannot see the pair" from "the AlignNet cannot use the answer".
"""
from __future__ import annotations

import numpy as np
import torch

from x2i_core import EncodedPrompt, MultimodalPrompt, PromptPart

from .evaluate import score, summarise
from .mllm_tasks import ASK_EN
from .world import COLOURS, SHAPES, Scene, caption

REASON_PROMPT = ASK_EN[0]  # "describe it in english": the captioning task of training (and of probe.task_accuracy)
REASON_TOKENS = 40  # a full caption is ~14 tokens; the cap only bounds a runaway answer
#: which hidden states condition the image: the answer's tokens after the dialogue (`x2i generate --reason`), the
#: whole dialogue then the answer (`--reason-with-prompt`), or the answer's text typed as a new English prompt (a
#: diagnostic: the text path on the same words, i.e. what `x2i generate "<answer>"` draws)
STATES = ("answer", "dialogue", "retyped")


def asking(prompt: MultimodalPrompt, instruction: str = REASON_PROMPT) -> MultimodalPrompt:
    """The prompt as one user turn, then the instruction as the next user turn (the MLLM's training dialogue)."""
    return prompt.followed_by("", [PromptPart("text", instruction)])


def read_answer(text: str) -> dict[str, str | None]:
    """The first colour and shape word an English answer names (None where it names none)."""
    words = text.lower().replace(".", " ").split()
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    return {"colour": colour, "shape": shape}


def score_answer(text: str, scene: Scene) -> dict[str, bool]:
    """Whether a one-shape scene's description names its colour, its shape, both, and is its exact full caption."""
    said, want = read_answer(text), scene.shapes[0]
    result = {"colour": said["colour"] == want.colour, "shape": said["shape"] == want.shape}
    result["colour_shape"] = result["colour"] and result["shape"]
    result["exact"] = " ".join(text.lower().split()) == caption(scene, "en", full=True)
    return result


def _padded(encoded: list[EncodedPrompt]) -> EncodedPrompt:
    """One batch of single-prompt encodings, right-padded with zero states and a False mask (as encode() pads)."""
    length = max(e.hidden_states.shape[2] for e in encoded)
    states, masks = [], []
    for e in encoded:
        pad = length - e.hidden_states.shape[2]
        states.append(torch.nn.functional.pad(e.hidden_states, (0, 0, 0, pad)))
        masks.append(torch.nn.functional.pad(e.attention_mask.bool(), (0, pad), value=False))
    return EncodedPrompt(torch.cat(states), torch.cat(masks))


class ReasonStudent:
    """Prompts -> Conditioning through the MLLM's answer (reply, then encode_reply, then the AlignNet). The empty
    prompt (the negative of true CFG) is encoded directly, as X2IPipeline encodes its negative prompt.
    `answers` collects every answer given, in order."""

    def __init__(self, encoder, aligner, instruction: str = REASON_PROMPT, max_new_tokens: int = REASON_TOKENS,
                 states: str = "answer"):
        if states not in STATES:
            raise ValueError(f"states must be one of {STATES}, got {states!r}")
        self.encoder, self.aligner = encoder, aligner
        self.instruction, self.max_new_tokens, self.states = instruction, int(max_new_tokens), states
        self.answers: list[str] = []

    def encode_one(self, prompt) -> EncodedPrompt:
        if isinstance(prompt, str) and not prompt.strip():
            return self.encoder.encode([prompt])
        asked = asking(MultimodalPrompt.coerce(prompt), self.instruction)
        answer = self.encoder.reply(asked, max_new_tokens=self.max_new_tokens).strip()
        self.answers.append(answer)
        if not answer:  # nothing to draw from (x2i generate refuses): the dialogue's own states, so a run goes on
            return self.encoder.encode([asked])
        if self.states == "retyped":
            return self.encoder.encode([answer])
        return self.encoder.encode_reply(asked, answer, with_prompt=self.states == "dialogue")

    def __call__(self, prompts):
        with torch.no_grad():
            enc = _padded([self.encode_one(p) for p in prompts])
            return self.aligner(enc.hidden_states, enc.attention_mask)


def colour_and_shape(images, targets) -> float:
    """Share of images that show the target's colour and shape (size, position, background not checked)."""
    return float(np.mean([score(np.asarray(im), t, {"colour", "shape"})["all"] for im, t in zip(images, targets)]))


def run_reason_set(backbone, encoder, aligner, name: str, n: int, steps: int = 20, seed: int = 0,
                   instruction: str = REASON_PROMPT, max_new_tokens: int = REASON_TOKENS, states: str = "answer"):
    """(summary, answer summary, answers, images, targets) of an image set generated through the MLLM's answers;
    the summary adds `colour_shape`, the answer summary scores the answers' text against the scenes."""
    from .benchmark import generate_batched, prompts_and_targets

    prompts, targets, checks = prompts_and_targets(name, n)
    student = ReasonStudent(encoder, aligner, instruction, max_new_tokens, states)
    images = generate_batched(backbone, student, prompts, steps=steps, seed=seed)
    summary = summarise([score(np.asarray(im), t, c) for im, t, c in zip(images, targets, checks)])
    summary["colour_shape"] = colour_and_shape(images, targets)
    scored = [score_answer(a, t) for a, t in zip(student.answers, targets)]
    said = {k: float(np.mean([r[k] for r in scored])) for k in scored[0]}
    return summary, said, student.answers, images, targets
