// Package dmftest provides a Dynamics 365 Finance & Operations simulator: a
// real HTTP server speaking the Data management package REST API
// (ExportToPackage, GetExecutionSummaryStatus, GetExportedPackageUrl,
// GetExecutionErrors, GetExecutionSummaryPageUrl) and serving the exported
// packages from SAS-signed URLs, as net/http/httptest does for HTTP servers.
// Use NewServer in tests; cmd/dmfsim runs the same simulator as a command.
//
// The public contract leaves some behaviour open; this simulator decides it
// as follows.
//
// Requests and errors:
//   - API calls are POST to /data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.<Action>.
//     Unknown paths get 404, other methods on an action 405 (with Allow: POST),
//     a missing or wrong bearer token 401, a malformed or empty JSON body 400;
//     all with an OData error body {"error":{"code":"...","message":"..."}}.
//     Codes are NotFound, MethodNotAllowed, Unauthorized, BadRequest and
//     TooManyRequests; messages are English sentences saying what to change.
//   - Body keys are matched case-insensitively and unknown keys are ignored.
//     Every action but ExportToPackage needs a non-empty executionId (else 400).
//   - Answers are {"@odata.context":"<base>/data/$metadata#Edm.String","value":"..."}
//     with Content-Type "application/json; odata.metadata=minimal". With
//     Options.NestedValue, ExportToPackage and GetExportedPackageUrl answer
//     {"@odata.context":"...","value":{"value":"..."}} instead.
//   - <base> is the URL set by SetBaseURL (NewServer sets it), otherwise
//     "http://" (or "https://") plus the request's Host.
//
// ExportToPackage:
//   - An unknown definitionGroupId gets 400 naming it.
//   - An empty executionId gets a new one, "<group>-<yyyy-MM-dd_HH-mm-ss>-<GUID>"
//     (UTC), the shape Microsoft's Recurring Integrations Scheduler uses.
//   - A reused executionId with reExecute false gets 400 "The execution ID
//     '<id>' already exists ..." (whether F&O rejects it is unconfirmed).
//     With reExecute true the execution starts over, replacing the earlier
//     one (its old package URLs keep working); reExecute true with a new ID
//     simply starts it.
//   - packageName (default: the group) and a random GUID form the package's
//     blob name; legalEntityId is accepted and ignored.
//
// Timing: an execution is NotRun for the first tenth of
// Options.ExecutionTime, then Executing, then in its final status
// (Options.FinalStatus, default Succeeded). Status is computed from the clock
// on each ask; no goroutines run. An unknown ID is "Unknown".
//
// GetExportedPackageUrl answers "" for unknown IDs, before the execution is
// final, for Failed, Canceled and any other final status but Succeeded and
// PartiallySucceeded, and for the first Options.EmptyURLAsks asks after
// success. Then it answers
//
//	<base>/dmf/<escaped blob name>?sv=2024-08-04&sr=b&sp=r&se=<expiry>&sig=<signature>
//
// where expiry is now+Options.URLTTL in RFC 3339 UTC, truncated to the
// second, and signature is the base64url HMAC-SHA256 of the blob path and
// expiry under a key random per Simulator. Each ask signs anew, so a later
// ask carries a later expiry.
//
// Package URLs (GET or HEAD /dmf/<name>) need no bearer token. A missing or
// altered signature gets 403, an expired one 403 saying so, both with Azure
// Storage style XML <Error><Code>AuthenticationFailed</Code>...; an unknown
// blob 404 BlobNotFound; other methods 405 UnsupportedHttpVerb. Range and
// conditional requests work (http.ServeContent). Packages never expire.
//
// The package is built once per execution and is the same bytes for the same
// entities: Manifest.xml and PackageHeader.xml (UTF-16 LE with BOM, declaring
// encoding="utf-16", elements in alphabetical order as F&O's serializer writes
// them, empty values as self-closing elements), then each entity's file,
// Deflate-compressed, in Options order. A PartiallySucceeded execution's
// package leaves out the last entity (file and manifest entry). Entity file
// names must be unique within a group.
//
// GetExecutionErrors answers a JSON list encoded as a string, as F&O does:
// for Failed `["Entity '<first entity>': simulated failure"]`, for
// PartiallySucceeded the same for the left-out last entity, for Canceled a
// message saying so, otherwise (including unknown IDs) "[]".
//
// GetExecutionSummaryPageUrl answers
// <base>/?mi=DMFExecutionSummary&executionId=<query-escaped ID>, for any ID.
//
// Throttling: with Options.Throttle = N, every Nth routed and authorized API
// call (all actions counted together; downloads never) gets 429 with
// Retry-After: 1 and an OData error; it is not counted by Calls.
//
// Fault injection (Options.Faults; cmd/dmfsim flags --fault, --stuck,
// --expired-urls, --corrupt-zip, --truncate-after, --content-length-delta,
// --download-rate, --download-faults-first), for what the real service does
// under load and the contract leaves to clients to survive:
//   - Faults.API rules pick calls of one action (or all API actions, or
//     "download" for package URLs) by count: the first N, every Nth, or all.
//     A picked call is delayed (Delay), then answered with Status and an
//     OData error (Azure Storage XML for downloads) whose code is
//     TooManyRequests, InternalServerError, BadGateway, ServiceUnavailable
//     or GatewayTimeout, with Retry-After in seconds (rounded up) or as an
//     HTTP date; or its connection is closed with no answer (Reset). With
//     Apply the action takes effect first, so the answer is lost but e.g.
//     the export has started: the case a client must recover through its
//     chosen execution ID. Every call picked or not is counted by Calls.
//   - Slow executions: a long Options.ExecutionTime. Stuck executions:
//     Faults.StuckExecution keeps them Executing forever (as does a
//     FinalStatus of "Executing").
//   - Faults.ExpiredURLs: the first N package URLs are handed out already
//     expired (se a minute in the past); later ones are valid.
//   - Download faults, for the first Faults.DownloadFaultsFirst downloads
//     or all: CorruptZip inverts 8 bytes in the middle of the package;
//     TruncateAfter sends that many bytes and closes the connection while
//     Content-Length announces the whole package; ContentLengthDelta
//     announces a wrong Content-Length (below zero the body is cut silently
//     at it, above zero the connection closes short of it); DownloadRate
//     throttles the body to that many bytes per second. Such downloads
//     honour only ranges of the form bytes=N- (what resuming clients send),
//     with the faults applied to the rest of the package.
//
// Logging: each request is logged at Info with method, path, action and
// status, never with headers or query strings, so neither tokens nor SAS
// signatures reach the log.
package dmftest
