"""The item space: unique titles, the item trie, the tokenizer, the one prompt template, and how items are
written (titles or semantic IDs)."""
