"""Checkpoint selection for a moral agent's RL: keep the step whose greedy answers to held-out questions earn the most.

A few RLOO steps at a high learning rate move a 135M model a lot, and where they leave it depends on the run: with
one seed, more steps lifted one value's agent and sank another's (README, Results). Standard practice is to judge
checkpoints on a held-out split and keep the best: every `every` steps from `start`, the adapter answers the MIC dev
questions greedily (as evaluation and serving decode), the value's reward scores the answers, and the adapter of the
best mean reward is kept; with `patience`, training stops after that many judgements without a new best.

Greedy decoding draws no random numbers, so judging does not change the training's sampling (cmva.sampling): with
and without selection the steps are the same, and the kept adapter is one the plain run passed through.

    >>> sel = DevSelection(model, tok, dev_questions, reward, every=2, start=4)   # doctest: +SKIP
    >>> trainer.add_callback(sel); trainer.train(); sel.restore(trainer.model)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from transformers import TrainerCallback

from cmva.decoding import Decoding

log = logging.getLogger(__name__)


class DevSelection(TrainerCallback):
    """Judges the adapter on dev questions during training; `restore` puts the best judged adapter back."""

    def __init__(
        self,
        model,
        tokenizer,
        questions: Sequence[str],
        reward: Callable[..., list[float]],
        every: int,
        start: int = 1,
        patience: int = 0,
        max_new_tokens: int = 32,
        decoding=None,
    ):
        """`decoding`: the base's rule for answers (`cmva.decoding.Decoding`; None: none)."""
        if not questions:
            raise ValueError("checkpoint selection needs dev questions (MIC rows with split=dev)")
        if every < 1:
            raise ValueError(f"agent.select_every must be ≥ 1 to select, got {every}")
        self.model, self.tok, self.questions, self.reward = model, tokenizer, list(questions), reward
        self.every, self.start, self.patience, self.max_new_tokens = every, max(start, 1), patience, max_new_tokens
        self.decoding = decoding or Decoding()
        self.history: list[dict] = []  # {"step", "dev_reward"} per judgement
        self.best_step: int | None = None
        self._best_reward = float("-inf")
        self._best_state: dict | None = None

    def due(self, step: int, max_steps: int) -> bool:
        """Judged at start, start + every, …, and at the last step."""
        return step >= self.start and ((step - self.start) % self.every == 0 or step == max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        if not self.due(state.global_step, state.max_steps):
            return control
        score = self.judge()
        self.history.append({"step": state.global_step, "dev_reward": score})
        log.info("dev reward at step %d: %.4f (best %.4f)", state.global_step, score, max(score, self._best_reward))
        if score > self._best_reward:
            self._best_reward, self.best_step, self._best_state = score, state.global_step, self._adapter_state()
        elif self.patience and self._since_best() >= self.patience:
            log.info(
                "no better dev reward in %d judgements: training stops at step %d", self.patience, state.global_step
            )
            control.should_training_stop = True
        return control

    def _since_best(self) -> int:
        return sum(1 for h in self.history if h["step"] > self.best_step)

    def judge(self) -> float:
        """Mean reward of the current adapter's greedy answers to the dev questions."""
        import numpy as np

        return float(np.mean(self.reward(completions=self.answers())))

    def answers(self) -> list[str]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        from cmva.decoding import answer_processors
        from cmva.prompts import agent_messages

        texts = [
            self.tok.apply_chat_template(agent_messages(q), add_generation_prompt=True, tokenize=False)
            for q in self.questions
        ]
        side, self.tok.padding_side = self.tok.padding_side, "left"
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        self.tok.padding_side = side
        cfg = GenerationConfig(
            do_sample=False,
            max_new_tokens=self.max_new_tokens,
            pad_token_id=self.tok.pad_token_id,
            eos_token_id=self.tok.eos_token_id,
        )
        rule = LogitsProcessorList(answer_processors(self.decoding, enc["input_ids"].shape[1]))
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                out = self.model.generate(**enc, generation_config=cfg, logits_processor=rule)
        finally:
            self.model.train(was_training)
        return self.tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def _adapter_state(self) -> dict:
        from peft import get_peft_model_state_dict

        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.model).items()}

    def restore(self, model) -> None:
        """Load the best judged adapter into `model` (the trainer's, which may wrap the judged one)."""
        from peft import set_peft_model_state_dict

        if self._best_state is not None:
            set_peft_model_state_dict(model, self._best_state)

    def summary(self) -> dict:
        return {"selected_step": self.best_step, "dev_reward_best": self._best_reward, "dev_history": self.history}
