//! Every test-only setting in one place. None of them changes behaviour unless its
//! environment variable is set, and none is meant for production use.
