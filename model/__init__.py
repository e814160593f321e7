"""Transformer encoder, tokenizer and optimizer shared by pre-training and fine-tuning."""
