// Package s3data keeps the bytes of tusgate's uploads in S3 or an
// S3-compatible server, shared by every gateway instance: a gateway.Backend
// built on tusd's s3store (aws-sdk-go-v2).
//
// # The problem
//
// tusd's s3store writes an upload as an S3 multipart upload: parts of at
// least 5 MiB, plus one "incomplete part" object (<id>.part) holding the
// tail that is not a part yet. The parts of a multipart upload cannot be
// read before it is completed, so s3store cannot read an upload until the
// client has sent its last byte. tusgate must forward api.video parts while
// the client is still uploading, and send the 5 MiB part 1 before the
// upload token's deadline, from any instance.
//
// # The design: staging objects
//
// Every WriteChunk call (the gateway gives it at most one api.video part:
// it cuts PATCH bodies at part boundaries and records progress after each
// call, see gateway.Backend.StreamsDurably) tees its source into a local
// temporary file while s3store uploads it. When s3store returns, the offset
// S3 now holds is known (offset+n, or read back from S3 after an error),
// and exactly the newly committed bytes, never more, are PUT from the
// temporary file as one staging object, keyed by their offset; only then
// does WriteChunk return. The bytes a WriteChunk reports are therefore
// readable by every instance (OpenRange), and the staged bytes never exceed
// tusd's offset (unless S3 loses bytes it had committed and they cannot be
// written again: the fourth point below).
//
// Objects of upload <obj>, under Config.Prefix:
//
//	<obj>                          the final object, once finished
//	<obj>.info                     tusd's upload info (JSON), with the multipart id
//	<obj>.part                     tusd's incomplete part (< 5 MiB), if any
//	<obj>.stage/<20-digit offset>  staging object: the bytes of one WriteChunk
//
// OpenRange lists <obj> (one LIST shows the final object, .info and the
// staging objects, as they sort in that order). A finished upload is read
// with one ranged GET of the final object; an incomplete one from the
// staging objects covering the range, each opened with a ranged GET when the
// reader reaches it (one HTTP body open at a time). A range not covered
// gives gateway.ErrNotReceived, a missing .info store.ErrNotFound.
// FinishUpload completes the multipart upload, then deletes the staging
// objects: the final object serves reads from then on (a reader whose
// staging object disappears under it switches to the final object).
// Remove and Terminate abort the multipart upload and delete every object
// above.
//
// # What tusd's s3store gets wrong, and what this package does about it
//
// Each of these is reproduced by a test that fails without the fix.
//
//   - s3store caches the incomplete part's size in its upload handle and
//     does not reset it when a write consumes that part, so a second write
//     on the same handle fails ("expected an incomplete part file"). Every
//     write after the first on a handle uses a fresh handle (three more
//     requests: GET .info, ListParts, HEAD .part).
//   - When its source fails, s3store drops the part it was filling, and
//     with it the incomplete part it had deleted from S3 and prepended: the
//     offset goes back. WriteChunk ends the source with io.EOF instead (as
//     tusd's own request-body reader does), so everything read is committed
//     and staged, then returns the source's error.
//   - s3store uploads the pieces of a write concurrently and keeps going
//     after one fails: a failed part followed by a successful incomplete
//     part leaves bytes at the wrong offset (a hole S3's offset does not
//     show). Each upload handle uploads one piece at a time and sends
//     nothing after a failure, so a failed write leaves a prefix of its
//     bytes in S3.
//   - When a part upload fails after s3store deleted the incomplete part to
//     prepend it, those committed bytes are gone from S3. They are still in
//     the staging objects: WriteChunk writes them again, so the offset the
//     client sees does not go back (when S3 answers again; otherwise the
//     client resends them from the lower offset).
//   - s3store's FinishUpload completes the multipart upload with its parts
//     only. The last bytes of a deferred-length upload whose length is
//     declared after they were sent (an empty last PATCH) are still in the
//     incomplete part, and the final object would lack them. FinishUpload
//     first makes an empty write, which turns the incomplete part into the
//     last part.
//
// An empty WriteChunk costs no request (s3store would download and upload
// its incomplete part again).
//
// # The gap
//
// If the process dies between s3store's commit and the staging PUT, or the
// staging PUT fails (WriteChunk then returns the error with n counting the
// committed bytes, and the client gets a 5xx), the committed bytes are in
// the multipart upload but in no staging object. The client's HEAD reports
// them and it sends what follows; OpenRange gives ErrNotReceived for them
// until the upload is finished, when the final object serves them. The
// forwarder then waits for the upload's completion for the api.video part
// holding them; if that is part 1, its token deadline is met only if the
// client finishes in time. The staging PUT runs for up to 30 s after the
// request's context is cancelled, so a client going away does not open the
// gap. Staging before committing would close the gap but stage bytes S3 may
// then not hold (readers would have to bound every read by the recorded
// offset); this package keeps "staged ⊆ committed".
//
// # Cost
//
//   - Every byte is PUT twice while the upload is incomplete: once into the
//     multipart upload, once as a staging object. Staging storage is
//     released when the upload is finished (or removed). Bytes that end a
//     write in tusd's incomplete part (a write that does not end on a 5 MiB
//     multiple, as in small PATCHes) are downloaded and uploaded again by
//     s3store on the next write, as with plain s3store.
//   - Requests per WriteChunk (TestRequestsPerSubChunk): the first on a
//     handle costs UploadPart + staging PUT (tusd opens a handle per
//     request and reads its info first: GET .info twice, see below,
//     ListParts, HEAD .part); each later one in the same PATCH adds three
//     info requests (GET .info, ListParts, HEAD .part); an incomplete part
//     adds GET + DELETE of .part (consumed) or a PUT (written).
//     FinishUpload: CompleteMultipartUpload, LIST, DeleteObjects (plus the
//     three info requests when the length was declared late). Offset: four.
//   - OpenRange: one LIST (more for uploads with over ~1000 staging objects,
//     that is very small PATCHes: a range starting on a staging object's
//     first byte, as every api.video part does, is then found with one more
//     LIST), and one ranged GET per staging object covered, or one GET of
//     the final object.
//   - Temporary disk per PATCH in progress: this package's copy of the
//     current WriteChunk (at most one api.video part) plus s3store's copy of
//     the part it is uploading (the same size, plus an incomplete part under
//     5 MiB): about two api.video parts. Set Config.PreferredPartSize to the
//     api.video part size so that a WriteChunk is one S3 part.
//   - Throughput: see BenchmarkWriteChunk (64 MiB written as 5 + 50 + 9 MiB
//     WriteChunks): about half of plain s3store's on a loopback server,
//     since twice the bytes are sent.
//
// # S3 and S3-compatible servers
//
// Credentials come from the standard AWS chain (environment, shared files,
// SSO, web identity, container and instance roles); an endpoint carrying
// credentials is refused. With Config.Endpoint set, requests use path-style
// addressing. Request checksums are computed only where S3 requires them,
// and response checksums validated only where required: since v1.73 of its
// s3 module, aws-sdk-go-v2 adds CRC32 checksum trailers (aws-chunked
// encoding) by default, which many S3-compatible servers reject.
//
// The bucket policy must allow s3:GetObject, s3:PutObject, s3:DeleteObject,
// s3:ListBucket (LIST, HeadBucket), s3:ListMultipartUploadParts,
// s3:AbortMultipartUpload and, to clean up uploads known only by their
// object id, s3:ListBucketMultipartUploads. A lifecycle rule aborting
// incomplete multipart uploads after a few days is a good safety net.
//
// # Upload ids
//
// tusd's s3store names an upload "<object id>+<multipart id>". This Store
// shows tusd, its clients and the gateway the object id alone (info.ID,
// the gateway's 128-bit hex id): upload URLs and state-store keys are the
// same as with the disk backend, whatever length and characters the S3
// server gives multipart ids (AWS's run to over a hundred characters). The
// multipart id is read from the .info object where s3store writes it: one
// more small GET for GetUpload (once per tus request) and Offset. Every
// method also accepts s3store's form. Object ids cannot contain "+" or "/".
//
// # Consistency
//
// Reading staging objects right after they are written needs
// read-after-write consistency of LIST and GET, which AWS S3 provides; on a
// server without it, a read may give ErrNotReceived until the listing
// catches up.
package s3data
