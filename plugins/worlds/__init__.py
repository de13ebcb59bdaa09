"""Built-in worlds: small procedural universes with a trained miniature X2I (encoder, backbone, aligner)."""
