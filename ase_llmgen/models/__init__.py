"""Model families behind one interface (:class:`~ase_llmgen.models.bundle.LMBundle`):
a small Llama trained from scratch with a crystal tokenizer, and a pretrained LLM
(SmolLM2 or any local Hugging Face causal LM) with a LoRA adapter."""
