package node

import (
	"encoding/json"
	"errors"
	"net/http"
)

// APIError is an error with its HTTP status and API error code (see
// shared API.md): invalid_request, unauthorized, unknown_card, card_blocked,
// insufficient_funds, offline_cap_exceeded, conflict, not_found, disk_full.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

func apiErr(status int, code, msg string) *APIError {
	return &APIError{Status: status, Code: code, Message: msg}
}

// Errors the money rules return; compare with errors.Is on the code.
var (
	ErrUnknownCard       = apiErr(http.StatusNotFound, "unknown_card", "this card is not known to the federation")
	ErrCardBlocked       = apiErr(http.StatusForbidden, "card_blocked", "this card is blocked")
	ErrInsufficientFunds = apiErr(http.StatusPaymentRequired, "insufficient_funds", "the card's balance is too low")
	// ErrDiskFull refuses a write while the node's disk is full (see
	// store.ErrDiskFull): nothing was written; reads go on, and the same
	// request (same idempotency key) succeeds once space is freed.
	ErrDiskFull = apiErr(http.StatusInsufficientStorage, "disk_full",
		"the node's disk is full: nothing was written; free space on the node and retry with the same idempotency key")
)

// Is matches API errors by code.
func (e *APIError) Is(target error) bool {
	var t *APIError
	return errors.As(target, &t) && t.Code == e.Code
}

func errorBody(code, msg string) []byte {
	b, _ := json.Marshal(map[string]string{"error": code, "message": msg})
	return b
}
