"""Model surgery: the architecture table, the strategies that choose layers, and dropping them."""
