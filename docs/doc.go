// Package docs holds the reference documentation as Markdown beside the
// files it describes (the message schema, the alert rules, the dashboard).
// It has no code: its tests keep the links between the pages working.
package docs
