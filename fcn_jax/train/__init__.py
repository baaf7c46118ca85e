"""Training: losses, the paper's optimiser recipes, the train state and step, the loop."""
