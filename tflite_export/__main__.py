"""`python -m tflite_export model.keras -o model.tflite ...` (same as `kprune export`)."""

import sys

from tflite_export.cli import export_main

if __name__ == "__main__":
    sys.exit(export_main(sys.argv[1:]))
