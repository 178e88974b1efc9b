package registry

// SetAttemptHook makes every etcd call of s that succeeds pass through f
// with its attempt number (0 for the first): an error f returns replaces
// the call's answer, as if the reply had been lost after etcd applied it.
// nil removes the hook.
func SetAttemptHook(s *Store, f func(attempt int) error) {
	if f == nil {
		s.retry.hook.Store(nil)
		return
	}
	s.retry.hook.Store(&f)
}
