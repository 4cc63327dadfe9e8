"""``python -m lcnn_audit``: the command-line interface."""

from lcnn_audit.cli import main

if __name__ == "__main__":
    main()
