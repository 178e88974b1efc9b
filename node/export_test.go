package node

// PickTransferee is pickTransferee, for tests.
var PickTransferee = pickTransferee
