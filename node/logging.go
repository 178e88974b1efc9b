package node

import (
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// harmless are etcd warnings that are expected in regd's normal operation
// and would only teach operators to ignore warnings.
var harmless = map[string]bool{
	// regd serves etcd's gRPC and HTTP on one client port, as etcd's default.
	"Running http and grpc server on single port. This is not recommended for production.": true,
	// dev mode's member is called "default" by design.
	"it isn't recommended to use default name, please set a value for --name. Note that etcd might run into issue when multiple members have the same default name": true,
	// regd does not enable etcd auth; the token type is irrelevant.
	"simple token is not cryptographically signed": true,
}

// quietCore demotes etcd's log entries that carry no information: the
// harmless warnings above, and anything etcd logs while regd is closing it,
// when listeners closing under their servers look like errors to etcd.
type quietCore struct {
	zapcore.Core
	closing *atomic.Bool
}

func (c quietCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if ent.Level <= zapcore.ErrorLevel && (harmless[ent.Message] || c.closing.Load()) {
		ent.Level = zapcore.DebugLevel
		if !c.Core.Enabled(ent.Level) {
			return ce
		}
		return ce.AddCore(ent, c)
	}
	if !c.Core.Enabled(ent.Level) {
		return ce
	}
	return ce.AddCore(ent, c)
}

func (c quietCore) With(fields []zapcore.Field) zapcore.Core {
	return quietCore{Core: c.Core.With(fields), closing: c.closing}
}

func quiet(lg *zap.Logger, closing *atomic.Bool) *zap.Logger {
	return lg.WithOptions(zap.WrapCore(func(core zapcore.Core) zapcore.Core {
		return quietCore{Core: core, closing: closing}
	}))
}
