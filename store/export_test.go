package store

// TmpPrefix lets the external tests recognise a DirStore's files in the
// middle of being written.
const TmpPrefix = tmpPrefix
