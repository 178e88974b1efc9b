package registry

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind classifies an Error; the HTTP layer maps each kind to one status.
type Kind int

// The kinds of failure regd distinguishes.
const (
	KindInternal    Kind = iota // a bug or an unexpected etcd answer
	KindInvalid                 // the client sent something malformed
	KindNotFound                // the thing asked for does not exist
	KindConflict                // valid, but not possible in the current state
	KindTooLarge                // the request is over a size limit
	KindUnavailable             // no quorum, no leader, timeout, shutting down
	KindTooMany                 // a per-client limit was hit; retry later
)

// Error is regd's one error type. Code is stable and machine-readable
// (snake_case); Message is a sentence for people.
type Error struct {
	Kind    Kind
	Code    string
	Message string
	Err     error // cause, for logs only; never shown to clients
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an Error of the given kind and code.
func Errorf(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Codes shared by several places. Validation codes live next to their rules.
const (
	CodeNotFound    = "not_found"
	CodeNoLease     = "no_lease"
	CodeUnavailable = "unavailable"
	CodeStorageFull = "storage_full"
	// CodeStorageUnwritable: this node cannot write its data dir at all.
	CodeStorageUnwritable = "storage_unwritable"
	CodeInternal          = "internal"
)

// AsError returns err as an *Error, classifying errors that come from etcd
// or from context cancellation. Anything unrecognised is KindInternal.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return fromEtcd(err)
}

func fromEtcd(err error) *Error {
	unavailable := func(msg string) *Error {
		return &Error{Kind: KindUnavailable, Code: CodeUnavailable, Message: msg, Err: err}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return unavailable("the cluster did not answer in time; it may have lost its quorum")
	case errors.Is(err, context.Canceled):
		return unavailable("the request was cancelled")
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		return &Error{Kind: KindNotFound, Code: CodeNotFound, Message: "the instance's lease has expired", Err: err}
	case errors.Is(err, rpctypes.ErrNoSpace):
		return &Error{Kind: KindUnavailable, Code: CodeStorageFull, Message: "a member of the cluster is out of storage space; writes are refused until space is freed", Err: err}
	}
	// In-process etcd errors are gRPC status errors; compare by code
	// because rpctypes errors are not always the same values.
	switch rpctypes.ErrorDesc(err) {
	case rpctypes.ErrLeaseNotFound.Error():
		return &Error{Kind: KindNotFound, Code: CodeNotFound, Message: "the instance's lease has expired", Err: err}
	case rpctypes.ErrNoSpace.Error():
		return &Error{Kind: KindUnavailable, Code: CodeStorageFull, Message: "a member of the cluster is out of storage space; writes are refused until space is freed", Err: err}
	}
	// etcd's client turns server errors into rpctypes.EtcdError, which
	// carries the gRPC code but is no gRPC status: no leader, timeouts and
	// a stopping server arrive this way.
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		switch ee.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted, codes.ResourceExhausted:
			return unavailable("the cluster cannot serve this request right now: " + ee.Error())
		}
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted, codes.ResourceExhausted:
			return unavailable("the cluster cannot serve this request right now: " + rpctypes.ErrorDesc(err))
		}
	}
	return &Error{Kind: KindInternal, Code: CodeInternal, Message: "internal error", Err: err}
}
