"""Text conditioning plumbing: prompt weighting syntax, tokenizing in 77-token chunks."""
