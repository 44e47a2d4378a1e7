"""The `kprune` command line: `main` (argument parsing), `demo`,
`file_report` (`kprune report` on `.keras` and `.tflite` files)."""
