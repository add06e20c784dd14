"""The billing rule book as pure functions: visits in, findings out."""
