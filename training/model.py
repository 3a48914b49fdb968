"""The sentiment RNN: embedding -> recurrent layer(s) -> linear head over the labels.

This module is the only definition of the network. Training builds it from a `ModelConfig`;
serving rebuilds it from the config stored in a checkpoint (`training.checkpoint`).

The recurrence is PyTorch's: `nn.RNN` is the plain `h_t = tanh(W_hh h_{t-1} + W_xh x_t)`,
`nn.LSTM` and `nn.GRU` its gated forms. The head reads the last layer's final hidden state,
like `y_t = W_hy h_t`; applied to every step (`forward_steps`) it gives the prediction "if
the text ended here". `step_from` continues a text from the state an earlier piece left, which
is what streaming (`app/streaming.py`) is built on.

The head divides its logits by the config's `temperature` (1 until calibration fits one, see
`training/calibration.py`): every path that reads the head (the batch pass, the step trace,
streaming, explanations) then gives the same calibrated probabilities, with the same argmax.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, NamedTuple, get_args

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

CellType = Literal["rnn", "lstm", "gru"]
CELL_TYPES: tuple[str, ...] = get_args(CellType)
_CELLS: dict[str, Callable[..., nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape: everything needed to rebuild it around a set of weights."""

    vocab_size: int
    num_labels: int
    cell: CellType = "lstm"
    embedding_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.3  # on embeddings, between recurrent layers, and before the head
    pad_id: int = 0
    # Logits are divided by it: fitted after training so scores are calibrated probabilities.
    # A config written before calibration existed has none and loads with 1 (no change).
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.cell not in _CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; expected one of {list(CELL_TYPES)}")
        for name in ("vocab_size", "num_labels", "embedding_dim", "hidden_size", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_labels < 2:
            raise ValueError("num_labels must be at least 2")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError("pad_id must be a valid vocabulary id")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be positive and finite, got {self.temperature}")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)


class LayerTrace(NamedTuple):
    """What one recurrent layer did in one direction over one text of T tokens.

    `hidden` is (T, H). `cell` is the LSTM cell state (T, H), else None. `gates` maps a gate
    name to its activations (T, H): LSTM "input", "forget", "output" (sigmoids, in [0, 1]) and
    "candidate" (tanh); GRU "reset" and "update" (sigmoids). Empty for the plain RNN.
    """

    hidden: torch.Tensor
    cell: torch.Tensor | None
    gates: dict[str, torch.Tensor]


class StepStates(NamedTuple):
    """Every layer's and direction's per-token trace for one text, plus the predictions.

    `layers[layer][direction]` is a `LayerTrace` (direction 0 reads left to right).
    `step_logits` is (T, num_labels): the head applied to each `h_t` of the last layer, or None
    for a bidirectional model, whose backward state at `t` has already read the words after it.
    `logits` (num_labels,) is the prediction for the whole text.
    """

    layers: list[list[LayerTrace]]
    step_logits: torch.Tensor | None
    logits: torch.Tensor


class RecurrentState(NamedTuple):
    """What a unidirectional model carries from one token to the next: all it remembers.

    `hidden` is every layer's last hidden state (L, H); `cell` the LSTM's cell state (L, H),
    else None. Zeros are the state before the first token.
    """

    hidden: torch.Tensor
    cell: torch.Tensor | None


class StepResult(NamedTuple):
    """What `step_from` returns after reading T more tokens.

    `step_logits` (T, num_labels) is the head applied to each new `h_t` of the last layer,
    `logits` (num_labels,) the prediction after the last of them (with T = 0, that of the
    state it was given), and `state` the state to continue from.
    """

    step_logits: torch.Tensor
    logits: torch.Tensor
    state: RecurrentState


class TemperatureHead(nn.Linear):
    """The linear head over the labels, its logits divided by a temperature.

    Inside the head rather than after it, so every caller of `head` (also outside this module)
    gets calibrated logits. The temperature is a buffer, not a parameter: the optimiser never
    sees it, and it follows the module's dtype and device. It is not persistent: it lives in
    the checkpoint's config, so weight files are the same with or without calibration.
    """

    temperature: torch.Tensor

    def __init__(self, in_features: int, out_features: int, temperature: float = 1.0) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("temperature", torch.tensor(float(temperature)), persistent=False)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = super().forward(input) / self.temperature
        return logits


class SentimentRNN(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, config.pad_id)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.rnn = _CELLS[config.cell](
            input_size=config.embedding_dim,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            bidirectional=config.bidirectional,
        )
        self.head_dropout = nn.Dropout(config.dropout)
        self.head = TemperatureHead(
            config.hidden_size * config.num_directions, config.num_labels, config.temperature
        )

    def set_temperature(self, temperature: float) -> None:
        """Divide the logits by `temperature` from now on; the config records it for saving."""
        self.config = replace(self.config, temperature=float(temperature))  # validates it
        with torch.no_grad():
            self.head.temperature.fill_(self.config.temperature)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> input vectors (B, T, E), with dropout in training mode."""
        embedded: torch.Tensor = self.embedding_dropout(self.embedding(ids))
        return embedded

    def final_hidden(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Last layer's final hidden state per text, both directions concatenated: (B, D*H)."""
        # Packing makes the recurrence stop at each text's own length, so a text's result
        # never depends on how much padding its batch-mates forced on it.
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, state = self.rnn(packed)
        h_n = state[0] if isinstance(state, tuple) else state  # (L*D, B, H)
        last = h_n.view(self.config.num_layers, self.config.num_directions, -1, h_n.size(-1))[-1]
        return torch.cat(list(last), dim=-1)  # (B, D*H)

    def classify(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_labels) from input vectors (B, T, E); gradients can reach them."""
        logits: torch.Tensor = self.head(self.head_dropout(self.final_hidden(embedded, lengths)))
        return logits

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_labels) for padded token ids (B, T) with true lengths (B,)."""
        return self.classify(self.embed(ids), lengths)

    def forward_padded(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`forward` without packing, for a one-direction model in eval mode.

        Every row runs for all T steps and is read at its own last token: a step only looks
        back, so the padding after a text cannot reach its result. Each step then multiplies
        the same number of rows, which lets a CPU use its fused RNN kernel (oneDNN, float32
        LSTM) and keeps a row's arithmetic the same whatever its batch-mates (see
        the serving predictor). Costs B * T steps where packing costs the sum of the lengths.
        """
        if self.config.bidirectional:
            raise ValueError("a bidirectional model reads texts backwards: use forward")
        output, _ = self.rnn(self.embed(ids))  # (B, T, H)
        rows = torch.arange(ids.size(0), device=ids.device)
        # The head may compute in a wider dtype than the recurrence (a bfloat16 pass).
        last = output[rows, lengths - 1].to(self.head.weight.dtype)
        logits: torch.Tensor = self.head(self.head_dropout(last))
        return logits

    def forward_steps(self, ids: torch.Tensor) -> StepStates:
        """Trace one unpadded text (T,) step by step through every layer (eval mode only).

        The recurrence is unrolled here with the packed module's own weights, so the states,
        gates and per-step predictions shown are exactly those the model computes.
        """
        if self.training:
            raise RuntimeError("forward_steps is for inspection; call model.eval() first")
        config = self.config
        layer_input = self.embedding(ids)  # (T, E)
        layers: list[list[LayerTrace]] = []
        for layer in range(config.num_layers):
            traces = [
                self._trace_direction(layer_input, layer, direction)
                for direction in range(config.num_directions)
            ]
            layers.append(traces)
            layer_input = torch.cat([trace.hidden for trace in traces], dim=-1)  # (T, D*H)
        last = layers[-1]
        final = [last[0].hidden[-1]] + ([last[1].hidden[0]] if config.bidirectional else [])
        logits = self.head(torch.cat(final, dim=-1))  # (num_labels,)
        step_logits = None if config.bidirectional else self.head(last[0].hidden)  # (T, C)
        return StepStates(layers, step_logits, logits)

    def initial_state(self) -> RecurrentState:
        """The state before the first token: zeros, in the weights' dtype."""
        config = self.config
        zeros = self.head.weight.new_zeros(config.num_layers, config.hidden_size)  # (L, H)
        return RecurrentState(zeros, zeros.clone() if config.cell == "lstm" else None)

    def step_from(self, ids: torch.Tensor, state: RecurrentState | None = None) -> StepResult:
        """Read the next tokens ids (T,) of a text from `state` (None: its start); T may be 0.

        Reading a text in pieces, each from the state the previous one returned, computes what
        one pass over the whole text does: the recurrence only ever looks back through its
        state. It runs the packed module itself (`self.rnn`, with `state` as its initial
        state), the same kernel `forward` uses, so the logits agree with `forward` to rounding.
        A bidirectional model cannot do this: its backward direction starts at the text's end.
        """
        config = self.config
        if config.bidirectional:
            raise ValueError("a bidirectional model cannot read a text in pieces")
        if self.training:
            raise RuntimeError("step_from is for inference; call model.eval() first")
        state = self.initial_state() if state is None else state
        if ids.numel() == 0:
            logits = self.head(state.hidden[-1])  # (num_labels,)
            return StepResult(logits.new_zeros(0, config.num_labels), logits, state)
        embedded = self.embedding(ids).unsqueeze(0)  # (1, T, E)
        h_0 = state.hidden.unsqueeze(1)  # (L, 1, H)
        if state.cell is None:
            output, h_n = self.rnn(embedded, h_0)  # (1, T, H), (L, 1, H)
            new_state = RecurrentState(h_n.squeeze(1), None)
        else:
            output, (h_n, c_n) = self.rnn(embedded, (h_0, state.cell.unsqueeze(1)))
            new_state = RecurrentState(h_n.squeeze(1), c_n.squeeze(1))
        step_logits = self.head(output.squeeze(0))  # (T, num_labels)
        return StepResult(step_logits, step_logits[-1], new_state)

    def _trace_direction(self, inputs: torch.Tensor, layer: int, direction: int) -> LayerTrace:
        """Unroll one layer in one direction over inputs (T, in) -> LayerTrace."""
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        w_ih = getattr(self.rnn, f"weight_ih{suffix}")  # (G*H, in), G gates
        w_hh = getattr(self.rnn, f"weight_hh{suffix}")  # (G*H, H)
        b_ih = getattr(self.rnn, f"bias_ih{suffix}")
        b_hh = getattr(self.rnn, f"bias_hh{suffix}")
        sequence = inputs.flip(0) if direction else inputs
        x_proj = sequence @ w_ih.T + b_ih  # (T, G*H): the input half of every step at once
        h = inputs.new_zeros(self.config.hidden_size)
        c = inputs.new_zeros(self.config.hidden_size)
        hs: list[torch.Tensor] = []
        cs: list[torch.Tensor] = []
        gate_steps: dict[str, list[torch.Tensor]] = {}
        cell = self.config.cell
        for x_t in x_proj:
            h_proj = w_hh @ h + b_hh  # (G*H,)
            if cell == "rnn":
                h = torch.tanh(x_t + h_proj)
                gates: dict[str, torch.Tensor] = {}
            elif cell == "lstm":
                i, f, g, o = (x_t + h_proj).chunk(4)
                i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
                c = f * c + i * g
                h = o * c.tanh()
                cs.append(c)
                gates = {"input": i, "forget": f, "candidate": g, "output": o}
            else:
                x_r, x_z, x_n = x_t.chunk(3)
                h_r, h_z, h_n = h_proj.chunk(3)
                r = (x_r + h_r).sigmoid()
                z = (x_z + h_z).sigmoid()
                n = (x_n + r * h_n).tanh()
                h = (1 - z) * n + z * h
                gates = {"reset": r, "update": z}
            hs.append(h)
            for name, value in gates.items():
                gate_steps.setdefault(name, []).append(value)

        def stacked(steps: list[torch.Tensor]) -> torch.Tensor:
            out = torch.stack(steps)  # (T, H)
            return out.flip(0) if direction else out

        return LayerTrace(
            hidden=stacked(hs),
            cell=stacked(cs) if cs else None,
            gates={name: stacked(steps) for name, steps in gate_steps.items()},
        )


def pad_ids(
    sequences: Sequence[Sequence[int]], pad_id: int = 0, *, multiple: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into ids (B, T) and lengths (B,); every list non-empty.

    T is the longest length, rounded up to a multiple of `multiple`."""
    sizes = [len(sequence) for sequence in sequences]
    if not sizes or min(sizes) < 1:
        raise ValueError("every sequence needs at least one token")
    longest = -(-max(sizes) // multiple) * multiple
    # One tensor from padded lists: cheaper than filling rows one by one (serving's hot path).
    padded = [
        [*sequence, *[pad_id] * (longest - size)]
        for sequence, size in zip(sequences, sizes, strict=True)
    ]
    ids = torch.tensor(padded, dtype=torch.long)
    return ids, torch.tensor(sizes, dtype=torch.long)
