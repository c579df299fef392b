"""What evalloss reads and writes outside the run: `files` (the one atomic writer and its
checks), `remote` (object storage read as a disk is), `usercode` (the one loader of the user's
own code)."""
