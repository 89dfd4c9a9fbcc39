"""Errors the model package raises for bad input: each names the field (column) at fault."""

from __future__ import annotations


class InvalidInputError(ValueError):
    """A value the model cannot score. `field` is the input column; the message says what was expected.

    The serving runtime maps this to HTTP 400, so the text is written for the API caller.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class DataValidationError(ValueError):
    """Raw training data failed validation. `column` names the column, `sample` shows offending rows."""

    def __init__(self, column: str, problem: str, sample: str = "") -> None:
        text = f"column {column!r}: {problem}"
        if sample:
            text += f"\noffending rows (first 5):\n{sample}"
        super().__init__(text)
        self.column = column
        self.problem = problem
