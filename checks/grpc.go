package checks

import (
	"context"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// probeGRPC asks target (host:port, optionally /service) the standard
// health-checking protocol (grpc.health.v1 Health/Check): passing on
// SERVING. Plaintext; one connection per probe, closed after it; no proxy,
// no retries, no service config from the target's name resolution.
func (p *Prober) probeGRPC(ctx context.Context, target string) Result {
	addr, service, _ := strings.Cut(target, "/")
	prefix := "gRPC health check " + target + ": "
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return p.dial(ctx, "tcp", a) }),
		grpc.WithNoProxy(),
		grpc.WithUserAgent(p.ua),
		grpc.WithDisableRetry(),
		grpc.WithDisableServiceConfig(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxGRPCMessage)),
	)
	if err != nil {
		return Result{Output: prefix + err.Error()}
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		msg := err.Error()
		if s, ok := status.FromError(err); ok {
			msg = s.Code().String() + ": " + s.Message()
		}
		if ctx.Err() != nil {
			msg = "timed out: " + msg
		}
		return Result{Output: prefix + msg}
	}
	st := resp.GetStatus()
	return Result{Passing: st == healthpb.HealthCheckResponse_SERVING, Output: prefix + st.String()}
}
