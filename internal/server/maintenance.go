package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/regd/regd/node"
	"github.com/regd/regd/registry"
)

// history is what the compactor needs: the ledger's compaction that never
// passes the expiry cursor, and the store's revision clock.
type history struct {
	*registry.Ledger
	st *registry.Store
}

func (h history) RevisionClock(ctx context.Context) ([]registry.HistorySample, error) {
	return h.st.RevisionClock(ctx)
}

func (h history) RecordRevision(ctx context.Context, now time.Time, keep time.Duration) ([]registry.HistorySample, error) {
	return h.st.RecordRevision(ctx, now, keep)
}

// registerBackendMetrics exposes the member's database size, its quota
// and etcd's alarms: a gauge per alarm type, so an alert can fire on
// regd_etcd_alarm{alarm="NOSPACE"} > 0 whichever member it was raised for.
func registerBackendMetrics(reg *prometheus.Registry, n *node.Node) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "regd_db_size_bytes",
			Help: "Size of this member's backend database (bbolt's high-water mark of pages): what etcd's quota (--quota-backend-bytes) is checked against. Defragmentation lowers it.",
		}, func() float64 { return float64(n.DBSize()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "regd_db_size_in_use_bytes",
			Help: "Part of regd_db_size_bytes that holds data. Compaction lowers it.",
		}, func() float64 { return float64(n.DBSizeInUse()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "regd_db_quota_bytes",
			Help: "The backend quota (--quota-backend-bytes, or etcd's default of 2 GiB).",
		}, func() float64 { return float64(n.Quota()) }),
	)
	for _, typ := range node.AlarmTypes {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "regd_etcd_alarm",
			Help:        "Members for which etcd's alarm of this type is raised (NOSPACE: writes refused cluster-wide; CORRUPT: members' data disagree).",
			ConstLabels: prometheus.Labels{"alarm": typ},
		}, func() float64 {
			count := 0
			for _, a := range n.Alarms() {
				if a.Type == typ {
					count++
				}
			}
			return float64(count)
		}))
	}
}

// maintenanceConfig is node.RunMaintenance's configuration with its metrics.
func maintenanceConfig(reg *prometheus.Registry, lg *zap.Logger) node.MaintenanceConfig {
	defrags := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "regd_defragmentations_total",
		Help: "Defragmentations of this member's backend database that regd ran.",
	})
	took := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "regd_defragmentation_seconds_total",
		Help: "Time this member spent defragmenting (it serves no request meanwhile).",
	})
	reclaimed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "regd_defragmentation_reclaimed_bytes_total",
		Help: "Bytes by which defragmentations shrank this member's database.",
	})
	reg.MustRegister(defrags, took, reclaimed)
	return node.MaintenanceConfig{
		Logger: lg,
		OnDefrag: func(d time.Duration, before, after int64) {
			defrags.Inc()
			took.Add(d.Seconds())
			reclaimed.Add(float64(max(before-after, 0)))
		},
	}
}
