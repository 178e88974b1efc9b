package registry

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kind classifies an Error; the HTTP layer maps each kind to one status
// (api/errors.go). The kinds follow gRPC's status codes where one fits.
type Kind int

// The kinds of failure regd distinguishes.
const (
	KindInternal         Kind = iota // a bug or an unexpected etcd answer (500)
	KindInvalid                      // the client sent something malformed (400)
	KindNotFound                     // the thing asked for does not exist (404)
	KindConflict                     // valid, but not possible in the current state (409)
	KindTooLarge                     // the request is over a size limit (413)
	KindUnavailable                  // no quorum, no leader, timeout, overload, shutting down (503)
	KindTooMany                      // a per-client limit was hit; retry later (429)
	KindUnauthenticated              // no valid credentials where they are needed (401)
	KindPermissionDenied             // valid credentials without the scope needed (403)
	KindRequestTimeout               // the client did not send its request in time (408)
	KindUnsupportedMedia             // a body in a format the route does not take (415)
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

// Code values: the one list of the codes regd answers with, in the
// "code" member of the contract's error JSON ({"error":{"code","message"}}).
// A code is stable and snake_case; clients switch on it. Every code is here
// and nowhere else: the domain's and the HTTP layer's alike, so that
// docs/api.md (the error table, which a test holds to this list) documents
// each exactly once, and a lint check (api/errcodes_test.go, run by
// `make lint`) refuses a code written as a literal anywhere else.
const (
	// Bad input (400).
	CodeInvalidService   = "invalid_service_name" // a service name breaks the naming rule (contract: Names)
	CodeInvalidID        = "invalid_instance_id"  // an instance id breaks the naming rule
	CodeInvalidAddress   = "invalid_address"      // not host:port (contract: Addresses)
	CodeInvalidTTL       = "invalid_ttl"          // ttl outside MinTTL..MaxTTL
	CodeInvalidMetadata  = "invalid_metadata"     // too many pairs or bytes, a bad key, a null value
	CodeInvalidStatus    = "invalid_status"       // status not up, draining or out_of_service
	CodeInvalidWeight    = "invalid_weight"       // weight outside 0..MaxWeight
	CodeInvalidCheck     = "invalid_check"        // a health check without one target, with settings out of range, a bad URL or address
	CodeInvalidJSON      = "invalid_json"         // a body that is not the JSON the route takes
	CodeInvalidParameter = "invalid_parameter"    // a malformed query parameter or header
	CodeInvalidMember    = "invalid_member"       // a member's name or peer URLs are malformed
	CodeBadRequest       = "bad_request"          // any other request HTTP itself refuses
	// CodeFutureRevision: a read's min_revision beyond the cluster's
	// current revision, which no write has made yet (etcd: ErrFutureRev,
	// "mvcc: required revision is a future revision").
	CodeFutureRevision = "future_revision"

	// Credentials (401, 403).
	CodeUnauthorized = "unauthorized" // no token where one is needed, or a token that is not valid
	CodeForbidden    = "forbidden"    // a valid token of too low a scope

	// Not there (404, 405).
	CodeNotFound         = "not_found"          // the instance is not registered, or has expired
	CodeRouteNotFound    = "route_not_found"    // no such route
	CodeMethodNotAllowed = "method_not_allowed" // the route exists with other methods (Allow lists them)

	// Client too slow, too big, too many, in the wrong format (408, 413,
	// 429, 415).
	CodeRequestTimeout = "request_timeout"  // the request body did not arrive in time
	CodeBodyTooLarge   = "body_too_large"   // a request body over the limit
	CodeTooManyStreams = "too_many_streams" // the per-client cap of streams and blocking queries
	// CodeUnsupportedMediaType: a PATCH body in a patch format other than
	// JSON merge patch (RFC 7396), e.g. JSON Patch (RFC 6902).
	CodeUnsupportedMediaType = "unsupported_media_type"

	// Not possible in the current state (409).
	CodeNoLease  = "no_lease" // heartbeat of a key a plain etcd client wrote without a lease
	CodeConflict = "conflict" // a deregistration or update kept racing with re-registrations
	// CodePlainInstance: a PATCH of a key a plain etcd client wrote; regd
	// keeps no record for it to hold a status, weight or metadata.
	CodePlainInstance = "plain_instance"
	// CodeQuorumAtRisk: the membership change would remove the last
	// voting member or leave fewer started voters than a quorum.
	CodeQuorumAtRisk = "quorum_at_risk"
	// CodeLearnerNotReady: the learner has not caught up with the
	// leader yet (etcd's rule for a promotion); retry in a moment.
	CodeLearnerNotReady = "learner_not_ready"
	// CodeMemberConflict: the peer URL is in use, the member is no
	// learner, the cluster has a learner already, or the member to remove
	// is the one answering.
	CodeMemberConflict = "member_conflict"

	// The node or the cluster cannot serve it now (503).
	CodeUnavailable = "unavailable" // no quorum, no leader, a timeout, shutting down
	CodeOverloaded  = "overloaded"  // this node is handling its maximum of requests at once
	CodeStorageFull = "storage_full"
	// CodeStorageUnwritable: this node cannot write its data dir at all.
	CodeStorageUnwritable = "storage_unwritable"
	// CodeCompacted: the revision asked for is older than the history
	// kept; watch streams turn it into a reset event.
	CodeCompacted = "compacted"
	// CodeSlowSubscriber ends a watch stream whose client fell too far
	// behind (in the stream's closing comment); it reconnects.
	CodeSlowSubscriber = "slow_subscriber"

	// A bug (500); the message is generic, the server log has the cause.
	CodeInternal = "internal"
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
