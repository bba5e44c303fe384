"""Development tools: the demo and the local provider fakes. Shipped for `herald demo`, never used in production."""
