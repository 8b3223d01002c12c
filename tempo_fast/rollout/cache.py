"""The rollout engine's static KV caches: the shared B*G cache a batch decodes into (filled from
the prefill's cache, each prompt's keys in its G rows), and the smaller caches left when finished
rows or prompts are dropped (rollout/engine.py).

Layout: rows b*G .. b*G+G-1 are prompt b's. Masked path: its keys at slots 0..L_b-1 (slots
L_b..Lmax-1 are masked pads). Batch-invariant: right-aligned at slots Lmax-L_b..Lmax-1, so that
with the generated keys (slot Lmax on) they form one contiguous range (rollout/invariant.py).
The shared cache is kept and refilled in place while the shape (rows, capacity, dtype, device)
stays: compiled steps and CUDA graphs hold its buffers' addresses.
"""
from __future__ import annotations

import torch


class SharedCaches:
    """The shared cache of the current shape, and the spare buffers batch-invariant drops reuse."""

    def __init__(self, config, batch_invariant: bool):
        self.config, self.batch_invariant = config, bool(batch_invariant)
        self._cache = None          # the shared StaticCache, reused while its shape fits
        self._key = None            # (rows, capacity, dtype, device) of self._cache
        self._spare = None          # batch-invariant drops: [(keys, values)] per layer, reused (compact)

    def new(self, rows: int, capacity: int, like):
        """A newly allocated (zeroed) StaticCache of `rows` rows, heads and dims as `like`'s layers."""
        from transformers import StaticCache
        from transformers.cache_utils import StaticLayer

        cache = StaticCache(config=self.config, max_cache_len=capacity)
        bad = [type(layer).__name__ for layer in cache.layers if type(layer) is not StaticLayer]
        if bad:
            raise NotImplementedError(f"RolloutEngine: only full-attention cache layers are supported, "
                                      f"the model's config asks for {sorted(set(bad))}")
        first = like.layers[0].keys
        cache.early_initialization(batch_size=rows, num_heads=[layer.keys.shape[1] for layer in like.layers],
                                   head_dim=[layer.keys.shape[-1] for layer in like.layers],
                                   dtype=first.dtype, device=first.device)
        return cache

    def share(self, prefix, num_samples: int, capacity: int, lengths: list):
        """A batch-(B * num_samples) StaticCache holding prompt b's keys/values in rows b*G..b*G+G-1:
        at slots 0..L_b-1 (the masked path skips the pad slots up to width), or with
        batch_invariant right-aligned at slots width-L_b..width-1, so that prompt b's keys and
        the generated ones (from slot width on) are one contiguous range (rollout/invariant.py)."""
        first = prefix.layers[0].keys
        count, width = first.shape[0], first.shape[2]
        rows = count * num_samples
        key = (rows, capacity, first.dtype, first.device)
        if self._cache is None or self._key != key:
            self._cache = self._spare = None  # free the old buffers before allocating new ones
            self._cache, self._key = self.new(rows, capacity, prefix), key
        for shared, layer in zip(self._cache.layers, prefix.layers):
            # In place: compiled steps and CUDA graphs hold these buffers' addresses. Slots past
            # `width` keep stale values; the causal mask (by cumulative_length) never reads them.
            for target, source in ((shared.keys, layer.keys), (shared.values, layer.values)):
                view = target.view(count, num_samples, *target.shape[1:])
                view[:, :, :, :width].copy_(source[:, None].expand(-1, num_samples, -1, -1, -1))
                for b, n in enumerate(lengths if self.batch_invariant else ()):
                    if n < width:  # slots 0..width-n-1 keep stale values, never read
                        view[b, :, :, width - n:width].copy_(source[b, None, :, :n].expand(num_samples, -1, -1, -1))
            shared.cumulative_length.fill_(width)
        return self._cache

    def compact(self, cache, keep: torch.Tensor, capacity: int):
        """A StaticCache with only rows `keep` of `cache` (the shared one stays for reuse). Masked
        path: a new cache. Batch-invariant (CPU, where a fresh zeroed cache costs its page faults
        at every drop): views of the first rows of reused buffers, alternating between the shared
        cache's (whose contents the next batch rewrites anyway) and one spare set sized by the
        first drop of its shape (later drops keep fewer rows)."""
        rows = int(keep.numel())
        if not self.batch_invariant:
            small = self.new(rows, capacity, cache)
            buffers = [(layer.keys, layer.values) for layer in small.layers]
        else:
            shared = [(layer.keys, layer.values) for layer in self._cache.layers]
            on_shared = cache.layers[0].keys.data_ptr() == shared[0][0].data_ptr()
            if on_shared and (self._spare is None or self._spare[0][0].shape[0] < rows
                              or self._spare[0][0].shape[1:] != shared[0][0].shape[1:]):
                self._spare = None
                self._spare = [(layer.keys, layer.values) for layer in self.new(rows, capacity, cache).layers]
            buffers = self._spare if on_shared else shared
            small = self._view(buffers, rows, capacity)
        for (keys, values), source in zip(buffers, cache.layers):
            torch.index_select(source.keys, 0, keep, out=keys[:rows])
            torch.index_select(source.values, 0, keep, out=values[:rows])
        for target, source in zip(small.layers, cache.layers):
            target.cumulative_length.copy_(source.cumulative_length)
        return small

    def _view(self, buffers, rows: int, capacity: int):
        """A StaticCache whose layers are the first `rows` rows of `buffers` (no allocation)."""
        from transformers import StaticCache

        cache = StaticCache(config=self.config, max_cache_len=capacity)
        for layer, (keys, values) in zip(cache.layers, buffers):
            empty = keys[:0, :, :0]
            layer.lazy_initialization(empty, values[:0, :, :0])  # dtype, device, heads, dims; 0-byte buffers
            layer.keys, layer.values, layer.batch_size = keys[:rows], values[:rows], rows
        return cache
