"""The language model: backbone, the one cached forward, trie-constrained decoding, policy log-probs."""
