"""ELECTRA pre-training: masking, sampling, the generator/discriminator model, data."""
