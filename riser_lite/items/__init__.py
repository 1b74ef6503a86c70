"""The item space: unique titles, the item trie, the tokenizer, and the one prompt template."""
