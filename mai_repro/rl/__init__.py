"""Post-training: verifiable tasks, rewards, rollouts, GRPO and self-distillation."""
