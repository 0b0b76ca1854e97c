// Package unpack turns a downloaded F&O data package into one stored object
// per entity: it downloads the package (Download), reads its Manifest.xml
// and PackageHeader.xml, and explodes it into a store.Store (Explode).
package unpack
