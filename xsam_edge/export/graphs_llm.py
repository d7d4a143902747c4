"""The ``llm`` edge graph: our own decoder-only LM forward over the transformers model's weights.

This exists for export only. transformers' own static-cache export wrapper diverges from eager once exported
and does not convert to Core ML or ONNX (EXPORT-RISKS C1), so the forward is written here (EXPORT-RISKS C2):

- K/V caches are registered buffers, one K and one V per layer, each (1, kv_heads, max_seq, head_dim).
- The cache write is a one-hot blend ``cache.copy_(cache * (1 - onehot.sum(0)) + onehotᵀ @ new)``, which
  every backend has (Core ML lacks ``index_copy``).
- Positions are explicit (``cache_position``); the causal mask is
  ``arange(max_seq) <= cache_position[:, None]`` and masked scores are set to the finite -1e4 (FP16-safe).
- RoPE cos/sin come from static (max_seq, rotary_dim) tables selected with the same one-hot matrix, so no
  ``pos · inv_freq`` product is ever formed in FP16 and no gather is needed.
- Attention is explicit ``softmax(q·kᵀ·scale)·v`` (faster than SDPA on ExecuTorch, TOOLCHAIN.md).
  Grouped-query attention folds the query groups into the query axis instead of repeating the cache, so the
  cache is read once per kv head and every tensor stays rank ≤ 5.

A position of ``PAD_POSITION`` (-1) marks a padding row: it writes nothing to the cache (its one-hot row is
zero) and no real row attends to it, so a short last prefill chunk is left-padded with it and the last row of
every chunk is a real token.

Families: ``phi3`` (fused ``qkv_proj`` and ``gate_up_proj``), ``llama``, ``qwen2`` (q/k/v biases) and
``qwen3`` (per-head q/k RMSNorm), all with default RoPE and SiLU MLPs. Any other family or RoPE type raises
``NotImplementedError``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

SUPPORTED_FAMILIES = ("phi3", "llama", "qwen2", "qwen3")
PAD_POSITION = -1  # cache_position of a padding row: no cache write, attends to nothing real
MASKED_SCORE = -1.0e4  # finite "minus infinity" for masked attention scores (FP16 max is 65504)


def _score_bias(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """(T, S) additive mask: 0 where ``allowed``, ``MASKED_SCORE`` elsewhere.

    A masked score becomes ``score + MASKED_SCORE`` instead of ``MASKED_SCORE``: after the softmax both are 0
    (exp(-1e4) underflows in float32), so every row with a visible slot gets the same probabilities. A row
    with none (a padding row) gets other finite weights than before; it writes no cache slot and is never
    read.
    """
    return torch.where(allowed, 0.0, MASKED_SCORE).to(dtype)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm as transformers computes it: statistics in float32, scale in the input dtype.

    Args:
        x (Tensor): (..., H) activations.
        weight (Tensor): (H,) scale.
        eps (float): added to the mean square.

    Returns:
        Tensor: (..., H) normalised activations.
    """
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) → (-x2, x1) over the last axis (the ``rotate_half`` RoPE convention)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the first ``rotary_dim`` features of every head; the rest pass through (partial RoPE).

    Args:
        x (Tensor): (1, heads, T, head_dim).
        cos (Tensor): (T, rotary_dim).
        sin (Tensor): (T, rotary_dim).

    Returns:
        Tensor: (1, heads, T, head_dim).
    """
    rot = cos.shape[-1]
    if rot == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)


def blend_write(cache: Tensor, new: Tensor, onehot: Tensor) -> Tensor:
    """The cache with ``new`` written at the one-hot rows (functional; no ``index_copy``/``index_put``).

    Args:
        cache (Tensor): (1, kv_heads, S, head_dim) current cache.
        new (Tensor): (1, kv_heads, T, head_dim) keys or values of this step.
        onehot (Tensor): (T, S) 1 where row t goes to slot s; all-zero rows (padding) write nothing.

    Returns:
        Tensor: (1, kv_heads, S, head_dim) updated cache.
    """
    keep = 1.0 - onehot.sum(0)  # (S,): 0 at written slots; a float 1 (ExecuTorch casts an int constant)
    return cache * keep[:, None] + onehot.transpose(0, 1) @ new  # (1, kv_heads, S, head_dim)


class _Block(nn.Module):
    """One decoder layer's weights, taken by reference from a transformers layer (no copy)."""

    def __init__(self, family: str, layer: nn.Module, window: int | None) -> None:
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp
        self.family = family
        self.window = window
        self.input_norm_eps = float(layer.input_layernorm.variance_epsilon)
        self.post_norm_eps = float(layer.post_attention_layernorm.variance_epsilon)
        self.input_layernorm = layer.input_layernorm
        self.post_attention_layernorm = layer.post_attention_layernorm
        self.o_proj = attn.o_proj
        self.down_proj = mlp.down_proj
        if family == "phi3":
            self.qkv_proj = attn.qkv_proj
            self.gate_up_proj = mlp.gate_up_proj
        else:
            self.q_proj, self.k_proj, self.v_proj = attn.q_proj, attn.k_proj, attn.v_proj
            self.gate_proj, self.up_proj = mlp.gate_proj, mlp.up_proj
        if family == "qwen3":
            self.q_norm, self.k_norm = attn.q_norm, attn.k_norm

    def qkv(self, x: Tensor, q_dim: int, kv_dim: int) -> tuple[Tensor, Tensor, Tensor]:
        """Query, key and value projections of (1, T, H): (1, T, q_dim), (1, T, kv_dim) twice."""
        if self.family == "phi3":
            fused = self.qkv_proj(x)  # (1, T, q_dim + 2·kv_dim)
            return fused[..., :q_dim], fused[..., q_dim : q_dim + kv_dim], fused[..., q_dim + kv_dim :]
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def mlp(self, x: Tensor) -> Tensor:
        """SiLU-gated MLP of (1, T, H) → (1, T, H)."""
        if self.family == "phi3":
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # gate first, as Phi3MLP
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(up * F.silu(gate))


class DecoderLM(nn.Module):
    """Functional core shared by ``LLMGraph`` and ``LLMGraphKVIO``: caches in, updated caches out.

    Args:
        llm (PreTrainedModel): the transformers causal LM (``XSam.llm``); its modules are shared, not copied.
        projector (nn.Module): LLM → decoder projector (``XSam.llm_projector``).
        max_seq (int): cache length S.

    Raises:
        NotImplementedError: the family, RoPE type or activation is not one this forward implements.
    """

    def __init__(self, llm: PreTrainedModel, projector: nn.Module, max_seq: int) -> None:
        super().__init__()
        cfg = llm.config
        family = cfg.model_type
        if family not in SUPPORTED_FAMILIES:
            raise NotImplementedError(
                f"LLM family {family!r} has no export forward; supported: {', '.join(SUPPORTED_FAMILIES)}"
            )
        rope = getattr(cfg, "rope_parameters", None) or {"rope_type": "default"}
        if rope.get("rope_type", "default") != "default":
            raise NotImplementedError(f"RoPE type {rope['rope_type']!r} is not exported; only 'default' is")
        if getattr(cfg, "hidden_act", "silu") != "silu":
            raise NotImplementedError(f"MLP activation {cfg.hidden_act!r} is not exported; only 'silu' is")
        if max_seq < 1:
            raise ValueError(f"max_seq must be ≥ 1, got {max_seq}")
        base = llm.model
        attn0 = base.layers[0].self_attn
        self.max_seq = max_seq
        self.num_layers = len(base.layers)
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = int(attn0.head_dim)
        self.scale = float(attn0.scaling)
        self.blocks = nn.ModuleList(
            _Block(family, layer, _layer_window(family, cfg, layer.self_attn)) for layer in base.layers
        )
        self.norm = base.norm
        self.norm_eps = float(base.norm.variance_epsilon)
        self.lm_head = llm.get_output_embeddings()
        self.projector = projector

        # RoPE tables over every cache slot, from transformers' own inv_freq (float32, as it computes them)
        rotary = base.rotary_emb
        inv_freq = rotary.inv_freq.float()  # (rotary_dim / 2,)
        slots = torch.arange(max_seq, dtype=torch.float32, device=inv_freq.device)
        freqs = slots[:, None] * inv_freq[None, :]  # (S, rot / 2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (S, rotary_dim)
        dtype = base.norm.weight.dtype
        scaling = float(rotary.attention_scaling)
        self.register_buffer("rope_cos", (emb.cos() * scaling).to(dtype), persistent=False)
        self.register_buffer("rope_sin", (emb.sin() * scaling).to(dtype), persistent=False)
        self.register_buffer(
            "slot_index", torch.arange(max_seq, dtype=torch.int64, device=inv_freq.device), persistent=False
        )

    @property
    def cache_shape(self) -> tuple[int, int, int, int]:
        """(1, kv_heads, max_seq, head_dim): the shape of one layer's K or V cache."""
        return (1, self.num_kv_heads, self.max_seq, self.head_dim)

    def forward(
        self, inputs_embeds: Tensor, cache_position: Tensor, caches: list[tuple[Tensor, Tensor]]
    ) -> tuple[Tensor, Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
        """Run T tokens against the caches.

        Args:
            inputs_embeds (Tensor): (1, T, H) input embeddings.
            cache_position (Tensor): (T,) int64 absolute positions, ``PAD_POSITION`` for padding rows.
            caches (list[tuple[Tensor, Tensor]]): per layer (K, V), each (1, kv_heads, S, head_dim).

        Returns:
            tuple[Tensor, Tensor, Tensor, list[tuple[Tensor, Tensor]]]: projected states (1, T, D),
            final-norm hidden states (1, T, H), next-token logits of the last row (1, vocab), and the
            updated caches (same shapes as ``caches``).
        """
        dtype = inputs_embeds.dtype
        # one (T, S) comparison gives the cache write, the RoPE rows and (via diff) the mask
        onehot = (self.slot_index[None, :] == cache_position[:, None]).to(dtype)  # (T, S)
        cos = onehot @ self.rope_cos  # (T, rotary_dim); zeros for padding rows
        sin = onehot @ self.rope_sin
        diff = cache_position[:, None] - self.slot_index[None, :]  # (T, S): query pos − key pos
        causal = diff >= 0
        # masks as additive score biases, built once per window: a select over every layer's (kvh, g, T, S)
        # scores ran as a portable kernel in ExecuTorch (a quarter of a prefill chunk); an add is delegated
        masks: dict[int | None, Tensor] = {None: _score_bias(causal, dtype)}

        hidden = inputs_embeds
        updated = []
        for block, (k_cache, v_cache) in zip(self.blocks, caches, strict=True):
            if block.window not in masks:
                masks[block.window] = _score_bias(torch.logical_and(causal, diff < block.window), dtype)
            x = rms_norm(hidden, block.input_layernorm.weight, block.input_norm_eps)
            attn, k_cache, v_cache = self._attention(
                block, x, (k_cache, v_cache), onehot, (cos, sin), masks[block.window]
            )
            hidden = hidden + attn
            normed = rms_norm(hidden, block.post_attention_layernorm.weight, block.post_norm_eps)
            hidden = hidden + block.mlp(normed)
            updated.append((k_cache, v_cache))
        normed = rms_norm(hidden, self.norm.weight, self.norm_eps)  # (1, T, H)
        logits = self.lm_head(normed[:, -1])  # (1, vocab): only the last row is ever sampled
        return self.projector(normed), normed, logits, updated

    def _attention(
        self,
        block: _Block,
        x: Tensor,
        cache: tuple[Tensor, Tensor],
        onehot: Tensor,
        rope: tuple[Tensor, Tensor],
        score_bias: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention of x (1, T, H) over the cache.

        Args:
            block (_Block): the layer's weights.
            x (Tensor): (1, T, H) normalised input.
            cache (tuple[Tensor, Tensor]): K and V caches, each (1, kv_heads, S, head_dim).
            onehot (Tensor): (T, S) write positions.
            rope (tuple[Tensor, Tensor]): cos and sin, each (T, rotary_dim).
            score_bias (Tensor): (T, S), 0 where row t may attend to slot s, ``MASKED_SCORE`` elsewhere.

        Returns:
            tuple[Tensor, Tensor, Tensor]: attention output (1, T, H) and the updated K and V caches.
        """
        _, t, _ = x.shape
        cos, sin = rope
        h, kvh, hd, s = self.num_heads, self.num_kv_heads, self.head_dim, self.max_seq
        groups = h // kvh
        q, k, v = block.qkv(x, h * hd, kvh * hd)
        q = q.view(1, t, h, hd).transpose(1, 2)  # (1, h, T, hd)
        k = k.view(1, t, kvh, hd).transpose(1, 2)  # (1, kvh, T, hd)
        v = v.view(1, t, kvh, hd).transpose(1, 2)  # (1, kvh, T, hd)
        if block.family == "qwen3":
            q = rms_norm(q, block.q_norm.weight, float(block.q_norm.variance_epsilon))
            k = rms_norm(k, block.k_norm.weight, float(block.k_norm.variance_epsilon))
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        k_cache = blend_write(cache[0], k, onehot)
        v_cache = blend_write(cache[1], v, onehot)

        # grouped-query attention: query head j·groups + i reads kv head j, so fold the groups into rows
        q = (q * self.scale).reshape(1, kvh, groups * t, hd)  # (1, kvh, g·T, hd)
        scores = (q @ k_cache.transpose(2, 3)).view(1, kvh, groups, t, s)  # (1, kvh, g, T, S)
        scores = scores + score_bias
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # float32 softmax, as transformers
        out = probs.view(1, kvh, groups * t, s) @ v_cache  # (1, kvh, g·T, hd)
        out = out.view(1, h, t, hd).transpose(1, 2).reshape(1, t, h * hd)  # (1, T, h·hd)
        return block.o_proj(out), k_cache, v_cache


def _layer_window(family: str, config: object, attn: nn.Module) -> int | None:
    """Sliding-attention window of one layer (keys with ``q − k < window`` are visible), or ``None``."""
    if family == "phi3":
        return getattr(config, "sliding_window", None)
    if family in ("qwen2", "qwen3"):
        return getattr(attn, "sliding_window", None)
    return None


class LLMGraph(nn.Module):
    """``llm`` edge graph, stateful: the K/V caches are buffers the program mutates. For export only.

    One module serves prefill and decode: it is exported twice, with T = ``prefill_len`` (graph
    ``llm_prefill``) and T = 1 (``llm_decode``). Both programs name the same parameters and the same cache
    buffers (``k_cache_{i}``, ``v_cache_{i}``), so a backend can join them into one program with shared
    state (ExecuTorch multi-method, Core ML multifunction). ExecuTorch and Core ML keep the buffers as state;
    ONNX and OpenVINO drop buffer mutations, so they take ``LLMGraphKVIO`` instead.

    Args:
        model (nn.Module): a built ``XSam``, or any object with its ``llm`` and ``llm_projector`` (shared, not
            copied).
        max_seq (int): cache length S (≤ the LLM's context).
        with_hidden (bool): also return the final-norm hidden states.
    """

    def __init__(self, model: nn.Module, max_seq: int, with_hidden: bool = False) -> None:
        super().__init__()
        self.lm = DecoderLM(model.llm, model.llm_projector, max_seq)
        self.with_hidden = with_hidden
        dtype = model.llm_projector.model[0].weight.dtype
        for i in range(self.lm.num_layers):
            for kind in ("k", "v"):
                cache = torch.zeros(self.lm.cache_shape, dtype=dtype)
                self.register_buffer(f"{kind}_cache_{i}", cache, persistent=False)

    def caches(self) -> list[tuple[Tensor, Tensor]]:
        """The cache buffers, per layer (K, V), each (1, kv_heads, max_seq, head_dim)."""
        layers = range(self.lm.num_layers)
        return [(getattr(self, f"k_cache_{i}"), getattr(self, f"v_cache_{i}")) for i in layers]

    @torch.no_grad()
    def reset_cache(self) -> None:
        """Zero every cache buffer (a new conversation; stale slots are masked anyway)."""
        for k_cache, v_cache in self.caches():
            k_cache.zero_()
            v_cache.zero_()

    def snapshot_cache(self) -> list[Tensor]:
        """Copies of the cache buffers, K then V per layer (e.g. after the image prefix)."""
        return [c.detach().clone() for pair in self.caches() for c in pair]

    @torch.no_grad()
    def restore_cache(self, snapshot: list[Tensor]) -> None:
        """Copy a ``snapshot_cache`` result back into the buffers."""
        buffers = [c for pair in self.caches() for c in pair]
        if len(snapshot) != len(buffers):
            raise ValueError(f"snapshot has {len(snapshot)} tensors, the cache {len(buffers)}")
        for buffer, saved in zip(buffers, snapshot, strict=True):
            buffer.copy_(saved)

    def forward(self, inputs_embeds: Tensor, cache_position: Tensor) -> tuple[Tensor, ...]:
        """Prefill a chunk (T = prefill_len) or decode one token (T = 1), updating the caches in place.

        Args:
            inputs_embeds (Tensor): (1, T, H) input embeddings.
            cache_position (Tensor): (T,) int64 absolute positions; ``PAD_POSITION`` (-1) for padding rows,
                which must come first in the chunk (left padding).

        Returns:
            tuple[Tensor, ...]: projected states (1, T, D), next-token logits of the last row (1, vocab),
            and with ``with_hidden`` the final-norm hidden states (1, T, H).
        """
        projected, hidden, logits, updated = self.lm(inputs_embeds, cache_position, self.caches())
        for (k_cache, v_cache), (k_new, v_new) in zip(self.caches(), updated, strict=True):
            k_cache.copy_(k_new)
            v_cache.copy_(v_new)
        return (projected, logits, hidden) if self.with_hidden else (projected, logits)


class LLMCacheRead(nn.Module):
    """``read_cache`` method of a stateful LLM program: the cache buffers out, stacked. For export only.

    A runtime that cannot touch a program's state from outside (the ExecuTorch Python and mobile runtimes)
    saves the cache after the image prefix through this method. It registers the very tensors of an
    ``LLMGraph`` under the same names (``k_cache_{i}``, ``v_cache_{i}``), so a program exported from both
    with shared mutable buffers reads the state that ``prefill`` / ``decode`` wrote.

    Args:
        graph (LLMGraph): the graph whose cache buffers are shared (not copied).
    """

    def __init__(self, graph: LLMGraph) -> None:
        super().__init__()
        self.num_layers = graph.lm.num_layers
        for i, (k_cache, v_cache) in enumerate(graph.caches()):
            self.register_buffer(f"k_cache_{i}", k_cache, persistent=False)
            self.register_buffer(f"v_cache_{i}", v_cache, persistent=False)

    def caches(self) -> list[tuple[Tensor, Tensor]]:
        """The shared cache buffers, per layer (K, V), each (1, kv_heads, max_seq, head_dim)."""
        layers = range(self.num_layers)
        return [(getattr(self, f"k_cache_{i}"), getattr(self, f"v_cache_{i}")) for i in layers]

    def forward(self) -> tuple[Tensor, Tensor]:
        """Copies of the caches.

        Returns:
            tuple[Tensor, Tensor]: keys and values, each (L, kv_heads, max_seq, head_dim), the layout of
            ``LLMGraphKVIO``'s past / present caches.
        """
        keys = torch.cat([k for k, _ in self.caches()], dim=0)  # (L, kv_heads, S, head_dim)
        values = torch.cat([v for _, v in self.caches()], dim=0)  # (L, kv_heads, S, head_dim)
        return keys, values


class LLMCacheWrite(LLMCacheRead):
    """``write_cache`` method: stacked keys and values into the shared cache buffers. For export only.

    Restores a ``read_cache`` result (encode once, query many) or zeros (a reset); see ``LLMCacheRead``.
    """

    def forward(self, keys: Tensor, values: Tensor) -> tuple[()]:
        """Overwrite every layer's cache.

        Args:
            keys (Tensor): (L, kv_heads, max_seq, head_dim).
            values (Tensor): (L, kv_heads, max_seq, head_dim).

        Returns:
            tuple[()]: nothing; the effect is the new program state.
        """
        for i, (k_cache, v_cache) in enumerate(self.caches()):
            k_cache.copy_(keys[i : i + 1])  # (1, kv_heads, S, head_dim)
            v_cache.copy_(values[i : i + 1])
        return ()


class LLMGraphKVIO(nn.Module):
    """``llm`` edge graph, functional: past K/V in, present K/V out (ONNX / OpenVINO). For export only.

    OpenVINO builds its stateful model from this graph with ``make_stateful`` (pairs ``past_keys`` ↔
    ``present_keys``, ``past_values`` ↔ ``present_values``). Exported twice like ``LLMGraph``
    (``llm_kvio_prefill``, ``llm_kvio_decode``).

    Args:
        model (nn.Module): a built ``XSam``.
        max_seq (int): cache length S.
    """

    def __init__(self, model: nn.Module, max_seq: int) -> None:
        super().__init__()
        self.lm = DecoderLM(model.llm, model.llm_projector, max_seq)

    def empty_cache(self) -> tuple[Tensor, Tensor]:
        """Zero past keys and values, each (L, kv_heads, max_seq, head_dim)."""
        lm = self.lm
        shape = (lm.num_layers, lm.num_kv_heads, lm.max_seq, lm.head_dim)
        dtype = lm.rope_cos.dtype
        return torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)

    def forward(
        self, inputs_embeds: Tensor, cache_position: Tensor, past_keys: Tensor, past_values: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Prefill a chunk or decode one token against explicit caches.

        Args:
            inputs_embeds (Tensor): (1, T, H) input embeddings.
            cache_position (Tensor): (T,) int64 absolute positions (``PAD_POSITION`` for left padding).
            past_keys (Tensor): (L, kv_heads, S, head_dim) every layer's key cache.
            past_values (Tensor): (L, kv_heads, S, head_dim) every layer's value cache.

        Returns:
            tuple[Tensor, Tensor, Tensor, Tensor]: projected states (1, T, D), next-token logits of the last
            row (1, vocab), present keys and present values (L, kv_heads, S, head_dim).
        """
        caches = [(past_keys[i][None], past_values[i][None]) for i in range(self.lm.num_layers)]
        projected, _, logits, updated = self.lm(inputs_embeds, cache_position, caches)
        present_keys = torch.cat([k for k, _ in updated], dim=0)  # (L, kv_heads, S, head_dim)
        present_values = torch.cat([v for _, v in updated], dim=0)  # (L, kv_heads, S, head_dim)
        return projected, logits, present_keys, present_values
