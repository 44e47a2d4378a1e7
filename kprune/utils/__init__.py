"""Utilities below the core: `progress` (progress output for long operations),
`table` (the table printer), `quiet` (TensorFlow's start-up lines off stderr),
`event_file` (TensorBoard event files without TensorFlow)."""
