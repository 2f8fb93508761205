"""Entry point for ``python -m fastvid`` (used by ``torchrun -m fastvid train ...``)."""
from fastvid.cli import main

if __name__ == "__main__":
    main()
