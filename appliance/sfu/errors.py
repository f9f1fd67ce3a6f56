"""Errors of the Calls API's session model, with the contract's HTTP status and errorCode."""


class SfuError(Exception):
    def __init__(self, status: int, code: str, description: str):
        super().__init__(description)
        self.status, self.code, self.description = status, code, description


class ItemError(Exception):
    """One item of a batch failed; the batch answers 200 with this item's errorCode (CALLS_API.md 1.5)."""

    def __init__(self, code: str, description: str):
        super().__init__(description)
        self.code, self.description = code, description
