"""Text causal LMs with 1-D RoPE: Qwen2, Qwen3, Llama, Mistral and friends."""

from blockdistill.models.families.base import BackboneFamily, register_family


class TextFamily(BackboneFamily):
    """Decoder = ``model.model``, head = ``model.lm_head``, positions ``0..n-1``."""

    name = "text"
    model_types = ("qwen2", "qwen3", "llama", "mistral", "gemma", "gemma2", "phi3", "olmo2")


register_family(TextFamily())
