// Package dmftest provides a Dynamics 365 Finance & Operations simulator: a
// real HTTP server speaking the Data management package REST API
// (ExportToPackage, GetExecutionSummaryStatus, GetExportedPackageUrl,
// GetExecutionErrors, GetExecutionSummaryPageUrl) and serving the exported
// packages from SAS-signed URLs, as net/http/httptest does for HTTP servers.
// Use NewServer in tests; cmd/dmfsim runs the same simulator as a command.
//
// Its defaults are F&O's behaviour: every behaviour the F&O export contract
// (the project's dmf-api.md: what Microsoft's documentation, its sample
// integrations and real packages establish) states is on with the zero Options value and in dmfsim without flags,
// since a quirk only a flag turns on is one no test meets. Options and
// dmfsim flags turn a behaviour off or tune it. Each item below names the
// part of the contract it comes from; "decision" marks what the contract
// leaves open and the simulator decides.
//
// Requests and errors (contract: "Calls", "Errors, as F&O sends them"):
//   - API calls are POST to /data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.<Action>.
//     Unknown paths get 404, other methods on an action 405 (with Allow:
//     POST), a malformed or empty JSON body 400.
//   - Every OData error is shaped as F&O sends it: {"error":{"code":"",
//     "message":"An error has occurred.","innererror":{"message":"<cause>",
//     "type":"System.Exception","stacktrace":"..."}}}: the generic top-level
//     message, the cause a user can act on in innererror.message (unknown
//     project, bad body, model state invalid, not registered, concurrent
//     export, duplicate ID, injected faults, throttling, routing).
//   - A missing or wrong bearer token gets 401 {"Message":"Authentication
//     failed."}, which is not OData (contract: "A refused token gets 401").
//   - Body keys are matched case-insensitively and unknown keys are ignored.
//     Every action but ExportToPackage needs a non-empty executionId (else 400).
//   - Answers are the flat {"@odata.context":"<base>/data/$metadata#Edm.String","value":"..."}
//     with Content-Type "application/json; odata.metadata=minimal"
//     (contract: "Real environments answer this flat form"). With
//     Options.NestedValue (dmfsim --nested-value), ExportToPackage and
//     GetExportedPackageUrl answer the documented nested form
//     {"@odata.context":"...","value":{"value":"..."}} instead.
//   - <base> is the URL set by SetBaseURL (NewServer sets it), otherwise
//     "http://" (or "https://") plus the request's Host.
//
// ExportToPackage:
//   - Every body field must be sent (contract: "Every ExportToPackage field
//     must be sent"): definitionGroupId, packageName, executionId, reExecute
//     and legalEntityId. A body that lacks one, or sends it as null
//     (decision), gets 400 with innererror "Model state is invalid. The
//     request body lacks <fields>; ...".
//   - An unknown definitionGroupId gets 400 naming it (contract: "The export
//     project ... must already exist").
//   - An empty executionId gets an ID made by the server (contract:
//     "executionId: empty → F&O makes a new one"): the group, "-", and the
//     start time in UTC as "MM/dd/yyyy hh:mm:ss am|pm", e.g.
//     "Customer export-11/15/2018 02:57:10 pm" (decision: zero-padded
//     month, day and 12-hour hour, lower-case am/pm, UTC). Two exports of a
//     group in the same second get the same ID (contract: "can collide"):
//     the second is refused with 400 "The execution ID '<id>' already
//     exists" (decision). In practice the first is usually still running,
//     so the concurrent-export refusal comes first.
//   - A reused executionId with reExecute false gets 400 "The execution ID
//     '<id>' already exists ..." (decision: whether F&O rejects it is
//     unconfirmed). With reExecute true the execution starts over,
//     replacing the earlier one (its old package URLs keep working);
//     reExecute true with a new ID simply starts it.
//   - One data project is exported by one execution at a time (contract:
//     "Two exports of the same data project at the same time are not
//     supported"): while an execution of the group has not reached its
//     final status (including its "not registered yet" window and a stuck
//     execution, until purged), ExportToPackage for the group gets 400 with
//     innererror "Data project '<group>' is being exported by execution
//     '<id>'; ..." (decision: the answer). The duplicate-ID check comes
//     first, so re-posting a chosen ID says "already exists".
//     Options.ConcurrentExports (dmfsim --allow-concurrent-exports) turns
//     the refusal off.
//   - packageName and a random GUID form the package's blob name;
//     legalEntityId is accepted and ignored.
//
// Excel one at a time (contract: "Excel: only one import or export to Excel
// can run at a time (DMF2039)"): an execution of a data project holding an
// EXCEL entity (any case) takes the environment's one Excel slot from its
// registration until it ends. One started while the slot is taken waits
// NotRun until it is free, then runs its full execution time (decision:
// F&O queues or fails it, which is not public; the simulator queues). Other
// executions are not held back; prebuilt Packages never take the slot.
// Options.ConcurrentExcel (dmfsim --concurrent-excel) turns this off.
//
// Timing (contract: "Right after ExportToPackage ... 'Execution details were
// not found'", "Status values"; the window's length is a decision):
//   - Each execution is first "not registered yet" for Options.RegisterDelay
//     (DefaultRegisterDelay, 1 s; negative turns it off; dmfsim
//     --register-delay, 0 turns it off). For the first half of that window
//     GetExecutionSummaryStatus answers HTTP 400 with innererror.message
//     "Execution details were not found for execution id <id>", for the
//     second half the status Unknown. During the window the other actions
//     answer as for an unknown ID ("" and "[]").
//   - Execution time counts from the end of that window: the execution is
//     NotRun for the first tenth of Options.ExecutionTime, then Executing,
//     then in its final status (Options.FinalStatus, default Succeeded).
//     Status is computed from the clock (Options.Now, default time.Now) on
//     each ask; no goroutines run. An unknown ID is "Unknown".
//   - Executions and their packages are purged after Options.History
//     (DefaultHistory, 7 days; negative keeps them; dmfsim --history, 0
//     keeps them), counted from the export (contract: "Execution history is
//     purged after about 7 days", "The package blob ... is deleted
//     automatically after 7 days"): then the status is Unknown, the package
//     URL "", the errors "[]", a download of an earlier URL 404
//     BlobNotFound, and the ID may be used again.
//
// GetExportedPackageUrl answers "" for unknown IDs, before the execution is
// final, for Failed, Canceled and any other final status but Succeeded and
// PartiallySucceeded, and for the first Options.EmptyURLAsks asks after
// success (contract: "Right after Succeeded the URL can briefly be empty";
// DefaultEmptyURLAsks, 1; negative: never; dmfsim --empty-url-asks, 0:
// never). Then it answers
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
// or purged blob 404 BlobNotFound; other methods 405 UnsupportedHttpVerb.
// Range and conditional requests work (http.ServeContent). For
// Options.PackageDelay after an execution's first package URL is handed out
// its package is not yet downloadable and answers 404 BlobNotFound too
// (contract: "Right after Succeeded the URL can briefly be empty or not yet
// downloadable"; decision: DefaultPackageDelay, 200 ms; negative: never;
// dmfsim --package-delay, 0: never).
//
// Change tracking (contract: "With change tracking on for an entity, each
// export holds only rows created or changed since the last run"): the first
// export of a data project holds every row of its IncrementalPush entities;
// later ones hold only the CSV file's header line (decision: no row changed
// since; other formats are unchanged). Options.FullIncremental and dmfsim
// --full-incremental keep every row in every export.
//
// QueryData (contract: "QueryData holds long hex blobs with line breaks
// inside"): written for every second entity of a manifest (decision), as
// upper-case hex broken into CRLF-separated lines; left out for the others.
//
// The package (contract: "The data package (zip)") is built once per
// execution and is the same bytes for the same entities: Manifest.xml and
// PackageHeader.xml, then each entity's file, Deflate-compressed, in Options
// order:
//   - Both XML files are UTF-16 LE with a BOM and no XML declaration, on one
//     line, elements in alphabetical order, empty values as self-closing
//     elements (<ExcelSheetName />). Optional elements F&O often leaves out
//     are absent: Disable, TargetEntity, QueryData, and DefaultRefreshType
//     where Entity.OmitRefreshType says so.
//   - EntityMapList (contract: "The manifest's field map (EntityMapList) is
//     alphabetical and may omit columns"): one EntityMap per Entity.Fields
//     name in alphabetical order, the last Entity.OmitFields left out;
//     <EntityMapList /> without Fields. Decision: each entry is
//     <EntityMap><ArrayIndex>0</ArrayIndex><EntityField>NAME</EntityField>
//     <IsAutoDefault>false</IsAutoDefault><XMLField>NAME</XMLField></EntityMap>,
//     as public sources do not show the entries.
//   - Manifest entries: DefaultRefreshType (Entity.RefreshType: FullPush by
//     default, or IncrementalPush), EntityMapList, EntityName,
//     ExcelSheetName, InputFilePath, LevelInExecutionUnit (1),
//     SequenceInLevel (1, 2, ...), SkipStaging (true), SourceFormat.
//   - ExcelSheetName: for Excel formats, Entity.Sheet with a trailing "$"
//     the workbook's sheet lacks, cut to 31 characters (runes; decision: the
//     cut applies after the "$" is added, so a 31-character sheet name is
//     recorded without it); empty for other formats or without a Sheet.
//   - InputFilePath: Entity.File, by default the label with the characters
//     invalid in file names (<>:"/\|?* and control characters) dropped plus
//     .csv, .xlsx (Excel formats) or .xml (XML formats): "Country/regions"
//     → "Countryregions.xlsx" (FileName).
//   - An Absent entity is listed in the manifest with no file in the zip; an
//     entity with no Data gets a 0-byte file (contract: "An entity with no
//     rows").
//   - PackageHeader.xml: Description, ManifestType, PackageType
//     DefinitionGroup, PackageVersion 2.
//   - A PartiallySucceeded execution's package leaves out the last entity
//     (file and manifest entry; decision). Entity file names must be unique
//     within a group.
//   - Options.Packages (LoadPackage; dmfsim --package) serves prebuilt zips
//     exactly as given instead, with the same timing, refusals and purge.
//
// GetExecutionErrors (contract: the GetExecutionErrors row) answers a
// JSON-encoded string whose content is a JSON array of {"RecordId","Field",
// "ErrorMessage"} objects, with quotes inside messages not escaped, so the
// inner text does not parse as JSON: for Failed two records naming the
// first entity (one message quoting a value), for PartiallySucceeded the
// same for the left-out last entity. Every Options.EmptyErrorsEvery-th
// Failed execution, counted per Simulator as they start, answers "[]"
// instead, as F&O has done for a failed job (DefaultEmptyErrorsEvery, 2:
// the second, fourth, ...; negative: never; dmfsim --empty-errors-every, 0:
// never; decision: the rule). Every other case, including Canceled and
// unknown IDs, answers "[]".
//
// GetExecutionSummaryPageUrl answers
// <base>/?mi=DMFExecutionSummary&executionId=<query-escaped ID>, for any ID.
//
// Entity files (contract: "Entity files", "Source data formats"):
// FOWorkbook, XMLElementFile and XMLAttributeFile follow "Excel files
// written by F&O" and the XML formats; TextFile writes delimited and
// fixed-width files in any of F&O's code pages (a value a non-Unicode code
// page cannot hold is refused, as DMF1957 does), with or without header
// row and BOM, with doubled or undoubled quotes; CompositeXMLFile writes a
// composite entity's nested XML. TextFormat.SourceFormat names the format
// as the manifest does: "CSV-Unicode", "CSV", or "FixedWidth" (decision:
// administrators name formats freely; readers detect "fixed").
//
// Throttling: F&O's service protection limits per user are enforced by
// default, for the Simulator's one token (downloads never count, as they go
// to Azure Storage): more than Options.MaxConcurrentRequests (52) API calls
// in progress at once get 429 with Retry-After: 1; more than
// Options.RequestBudget (6,000) accepted calls in any Options.BudgetWindow
// (a sliding 5 minutes) get 429 with a Retry-After saying when the oldest
// call leaves the window; more than Options.ExecutionBudget (1,200 s) of
// combined answer time in the window likewise. Decisions: the execution
// budget is measured as the wall time the Simulator spends answering
// (milliseconds per call, so only slow-answer faults come near it); a
// refused call counts against neither budget, so a client that keeps
// calling after a 429 is not punished beyond the limit itself (F&O does
// not publish which way it counts). Each limit has a knob (negative: off)
// and a dmfsim flag (--max-concurrent-requests, --request-budget,
// --execution-budget, --budget-window; 0: off); ThrottledCalls counts the
// refusals per limit and PeakConcurrency the most calls answered at once.
// With Options.Throttle = N, in addition, every Nth routed and authorized
// API call (all actions counted together) gets 429 with Retry-After: 1.
// A refused call is not counted by Calls.
//
// Fault injection (Options.Faults; cmd/dmfsim flags --fault, --stuck,
// --expired-urls, --corrupt-zip, --truncate-after, --content-length-delta,
// --download-rate, --stall-after, --endless-body, --download-faults-first),
// for what the real service does
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
//     Instead of an error a picked API call can get a 200 the client cannot
//     use (Answer; dmfsim --fault answer=KIND): AnswerOversize, 9 MiB of
//     JSON; AnswerGzipBomb, about 64 KiB gzip-encoded that decode to 64 MiB;
//     AnswerHTML, a proxy's HTML page; AnswerGarbage, bytes that are not
//     JSON. With Apply the action takes effect behind such an answer too.
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
//     throttles the body to that many bytes per second; StallAfter sends
//     that many bytes and then nothing, holding the connection open;
//     EndlessBody sends no Content-Length and the package followed by zero
//     bytes without end (whatever Range was asked). Such downloads
//     honour only ranges of the form bytes=N- (what resuming clients send),
//     with the faults applied to the rest of the package.
//
// Logging: each request is logged at Info with method, path, action and
// status, never with headers or query strings, so neither tokens nor SAS
// signatures reach the log.
package dmftest
