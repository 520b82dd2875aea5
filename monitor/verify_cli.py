"""``tlog verify-evidence FILE --log-key VKEY`` (implemented in tlog.cli, re-exported for the monitor).

Exit 0 only when the file proves that the log signed two incompatible histories; 1 when it does not;
2 when the file or the key cannot be read.  One line of output.
"""

from tlog.cli import verify_evidence_file as run

__all__ = ["run"]
