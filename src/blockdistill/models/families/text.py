"""Text causal LMs with 1-D RoPE and a plain LM head: Qwen2/3, Llama, Mistral and friends."""

from blockdistill.models.families.base import BackboneFamily, register_family


class TextFamily(BackboneFamily):
    """Decoder = ``get_decoder()``, head = ``get_output_embeddings()``, positions ``0..n-1``.

    GPT-NeoX (partial rotary, ``embed_out`` head), Phi (partial rotary, biased head) and
    StarCoder2 (biased layers) fit these defaults unchanged."""

    name = "text"
    model_types = ("qwen2", "qwen3", "llama", "mistral", "gemma", "phi3", "olmo2", "starcoder2", "phi",
                   "gpt_neox")


register_family(TextFamily())
