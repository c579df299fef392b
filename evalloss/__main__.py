"""``python -m evalloss`` (and ``torchrun -m evalloss``) run the CLI."""

from evalloss.cli import main

if __name__ == "__main__":
    main()
