"""The cascade: one Stage per tier, coarse to fine."""

from __future__ import annotations

from typing import Any

from torch import nn

from models.wavenet import Stage, build_stage


class Cascade(nn.Module):
    """Stages 0..K; ``rates[k]`` is stage k's rate in Hz."""

    def __init__(self, stages: list[Stage], rates) -> None:
        super().__init__()
        if len(stages) != len(rates):
            raise ValueError(f"Cascade: {len(stages)} stages but {len(rates)} rates")
        self.stages = nn.ModuleList(stages)
        self.rates = [int(r) for r in rates]

    @classmethod
    def from_config(cls, cfg: Any, n_genres: int) -> Cascade:
        """Build a Stage per ``cfg.stages[k]`` (factor = rates[k] // rates[k-1])."""
        stages = [build_stage(cfg, k, n_genres) for k in range(len(cfg.stages))]
        return cls(stages, list(cfg.data.rates)[: len(cfg.stages)])

    def __len__(self) -> int:
        return len(self.stages)

    def __getitem__(self, k: int) -> Stage:
        return self.stages[k]

    def summary(self) -> list[dict]:
        """Per stage: rate, receptive field / history reach / lookahead (samples, seconds), size, cost."""
        rows = []
        for k, (st, rate) in enumerate(zip(self.stages, self.rates)):
            rows.append({
                "index": k,
                "rate": rate,
                "receptive_field": st.receptive_field,
                "receptive_field_seconds": st.receptive_field / rate,
                "history_receptive_field": st.history_receptive_field,
                "history_receptive_field_seconds": st.history_receptive_field / rate,
                "lookahead": st.lookahead,
                "lookahead_seconds": st.lookahead / rate,
                "params": st.n_params,
                "flops_per_sample": st.flops_per_sample(),
            })
        return rows
