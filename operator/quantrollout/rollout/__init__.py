"""The rollout: stages flattened into steps, and the pure state machine that walks them.
No I/O: (state, inputs) -> decision."""
