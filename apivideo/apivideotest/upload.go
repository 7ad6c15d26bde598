package apivideotest

import (
	"bufio"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// rangeForm is how the chunks of a video are described.
type rangeForm int

const (
	formWhole rangeForm = iota // no Content-Range: the whole file at once
	formParts                  // Content-Range: part N/TOTAL
	formBytes                  // Content-Range: bytes FROM-TO/TOTAL
)

func (f rangeForm) String() string {
	switch f {
	case formParts:
		return "part"
	case formBytes:
		return "bytes"
	default:
		return "whole"
	}
}

// contentRange is a parsed Content-Range header.
type contentRange struct {
	form rangeForm
	// part form
	part       int
	totalParts int // valid when totalKnown
	totalKnown bool
	// bytes form
	from, to, totalBytes int64
}

// parseContentRange parses "" (whole upload), "part N/TOTAL", "part N/*"
// and "bytes FROM-TO/TOTAL". Value checks (zero, order) are left to the
// caller so each gets its own error.
func parseContentRange(h string) (contentRange, bool) {
	if h == "" {
		return contentRange{form: formWhole}, true
	}
	unit, spec, ok := strings.Cut(h, " ")
	if !ok {
		return contentRange{}, false
	}
	switch unit {
	case "part":
		n, total, ok := strings.Cut(spec, "/")
		part, ok1 := parseNumber(n)
		if !ok || !ok1 || part > 1<<30 {
			return contentRange{}, false
		}
		cr := contentRange{form: formParts, part: int(part)}
		if total != "*" {
			t, ok := parseNumber(total)
			if !ok || t > 1<<30 {
				return contentRange{}, false
			}
			cr.totalParts, cr.totalKnown = int(t), true
		}
		return cr, true
	case "bytes":
		rng, total, ok := strings.Cut(spec, "/")
		from, to, ok1 := strings.Cut(rng, "-")
		f, ok2 := parseNumber(from)
		t, ok3 := parseNumber(to)
		n, ok4 := parseNumber(total)
		if !ok || !ok1 || !ok2 || !ok3 || !ok4 {
			return contentRange{}, false
		}
		return contentRange{form: formBytes, from: f, to: t, totalBytes: n}, true
	}
	return contentRange{}, false
}

// parseNumber parses a non-negative decimal made of digits only.
func parseNumber(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// uploadBody is what the multipart body of an upload carried.
type uploadBody struct {
	videoID  string
	fileName string
	files    int
	size     int64
	sum      [sha256.Size]byte // when hashed
	hashed   bool
	data     []byte // nil unless the server keeps bytes
}

// readUploadBody streams the multipart body, hashing the file as it goes.
func (s *Server) readUploadBody(r *http.Request) (*uploadBody, *problem) {
	defer drain(r)
	mediaType, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/form-data" || params["boundary"] == "" {
		return nil, errNoFile()
	}
	mr := multipart.NewReader(bufio.NewReaderSize(r.Body, readBufferSize), params["boundary"])
	b := &uploadBody{}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, invalidPayload(err)
		}
		switch {
		case part.FileName() != "" || part.FormName() == "file":
			b.files++
			if b.files > 1 {
				_, err = io.Copy(io.Discard, part)
				break
			}
			b.fileName = part.FileName()
			err = s.readFile(part, b)
		case part.FormName() == "videoId":
			var v []byte
			v, err = io.ReadAll(io.LimitReader(part, 1<<10))
			b.videoID = strings.TrimSpace(string(v))
		default:
			_, err = io.Copy(io.Discard, part)
		}
		if err != nil {
			return nil, invalidPayload(err)
		}
	}
}

// readFile hashes (and keeps, up to the part size limit) the file part.
func (s *Server) readFile(part io.Reader, b *uploadBody) error {
	h := sha256.New()
	buf := make([]byte, readBufferSize)
	keep := s.keepBytes
	for {
		n, err := part.Read(buf)
		if n > 0 {
			if s.hash {
				h.Write(buf[:n])
			}
			b.size += int64(n)
			switch {
			case !keep:
			case b.size > s.limits.maxPart: // will be rejected: stop keeping
				keep, b.data = false, nil
			default:
				b.data = append(b.data, buf[:n]...)
			}
		}
		if err == io.EOF {
			if s.hash {
				copy(b.sum[:], h.Sum(nil))
				b.hashed = true
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// handleUpload serves POST /upload?token=….
func (s *Server) handleUpload(x *exchange) {
	token := x.r.URL.Query().Get("token")
	body, p := s.readUploadBody(x.r)
	if body != nil {
		x.record(func(r *Request) { r.VideoID, r.Size = body.videoID, body.size })
	}
	if p != nil {
		x.fail(p)
		return
	}
	s.mu.Lock()
	v, p := s.acceptLocked(x.at, token, x.r.Header.Get("Content-Range"), body)
	var out videoJSON
	if p == nil {
		if v.complete && v.completedAt.IsZero() {
			v.completedAt = s.now()
		}
		out = v.json()
		s.requests[x.seq].Accepted = true
		s.requests[x.seq].AcceptedVideoID = v.id
	}
	s.mu.Unlock()
	if p != nil {
		x.fail(p)
		return
	}
	x.reply(http.StatusCreated, out)
}

// acceptLocked applies every rule to the chunk and stores it.
func (s *Server) acceptLocked(now time.Time, token, header string, b *uploadBody) (*video, *problem) {
	if token == "" {
		return nil, errMissingToken()
	}
	valid := s.tokens[token].validAt(now)
	var v *video
	if b.videoID != "" {
		v = s.videos[b.videoID]
		if v == nil || v.token != token {
			if !valid {
				return nil, errInvalidToken()
			}
			return nil, newProblem(http.StatusNotFound, "resource-not-found", "The requested resource could not be found.", "videoId",
				fmt.Sprintf("No video %q was started with this upload token.", b.videoID))
		}
		open := now.Before(v.createdAt.Add(s.window))
		if !valid && !open {
			return nil, errInvalidToken()
		}
		if !open {
			return nil, newProblem(http.StatusBadRequest, "upload-window-closed", "The upload window of this video has closed.", "videoId",
				fmt.Sprintf("Every chunk must arrive within %s of the first one.", s.window))
		}
	} else if !valid {
		return nil, errInvalidToken()
	}

	cr, ok := parseContentRange(header)
	if !ok {
		return nil, errMalformedRange()
	}
	switch {
	case b.files == 0:
		return nil, errNoFile()
	case b.files > 1:
		return nil, newProblem(http.StatusBadRequest, "uploaded-file-multiple-files", "There are more than one uploaded file in the request.", "file", "")
	case b.size == 0:
		return nil, newProblem(http.StatusBadRequest, "uploaded-file-empty", "The uploaded file is empty.", "file", "")
	}

	var p *problem
	switch cr.form {
	case formWhole:
		p = s.checkWhole(v, b)
	case formParts:
		p = s.checkPart(v, cr, b)
	case formBytes:
		p = s.checkBytes(v, cr, b)
	}
	if p != nil {
		return nil, p
	}
	if v == nil {
		v = &video{
			id: newID("vi", 22), token: token, title: b.fileName, form: cr.form,
			createdAt: now, byNumber: make(map[int]*chunk),
		}
		if v.title == "" {
			v.title = "video"
		}
		s.videos[v.id] = v
		s.videoList = append(s.videoList, v)
	}
	v.add(now, cr, b, s.keepBytes)
	return v, nil
}

func (s *Server) checkWhole(v *video, b *uploadBody) *problem {
	if v != nil {
		if v.complete {
			return errAlreadyUploaded()
		}
		return newProblem(http.StatusBadRequest, "video-content-range-already-initiated",
			`This video source has already been initiated with a "Content-Range" upload.`, "", "")
	}
	if b.size > s.limits.maxPart {
		return newProblem(http.StatusBadRequest, "uploaded-file-too-large", "The uploaded file is too large.", "file",
			fmt.Sprintf("A file sent without Content-Range must not exceed %d bytes; send it in chunks.", s.limits.maxPart))
	}
	return nil
}

func (s *Server) checkPart(v *video, cr contentRange, b *uploadBody) *problem {
	bad := func(slug, title, detail string) *problem {
		return newProblem(http.StatusBadRequest, slug, title, "Content-Range", detail)
	}
	switch {
	case cr.part == 0:
		return bad("video-content-range-by-part-part-zero", `The "part" value in the "Content-Range" header must be greater than 0.`, "")
	case cr.totalKnown && cr.totalParts == 0:
		return bad("video-content-range-by-part-total-parts-zero", `The "total_parts" value in the "Content-Range" header must be greater than 0.`, "")
	case cr.part > s.limits.maxParts:
		return bad("video-content-range-by-part-part-too-high-allowed", `The "part" value in the "Content-Range" header is higher than the maximum number of parts allowed for a video.`,
			fmt.Sprintf("The maximum number of parts allowed for a video is %d.", s.limits.maxParts))
	case cr.totalKnown && cr.totalParts > s.limits.maxParts:
		return bad("video-content-range-by-part-total-parts-too-high", `The "total_parts" value in the "Content-Range" header is higher than the maximum number of parts allowed for a video.`,
			fmt.Sprintf("The maximum number of parts allowed is %d.", s.limits.maxParts))
	case cr.totalKnown && cr.part > cr.totalParts:
		return bad("video-content-range-by-part-part-too-high-total", `The "part" value in the "Content-Range" header is higher than the "total_parts" value.`,
			fmt.Sprintf("Part %d of %d.", cr.part, cr.totalParts))
	}
	total := 0
	if cr.totalKnown {
		total = cr.totalParts
	}
	if v != nil {
		switch v.form {
		case formBytes:
			return bad("video-content-range-started-with-bytes", `This "Content-Range" upload has been started with "bytes", you cannot continue it with "part".`, "")
		case formWhole:
			return errAlreadyUploaded()
		}
		if v.totalParts > 0 {
			if cr.totalKnown && cr.totalParts != v.totalParts {
				return bad("video-content-range-by-part-different-total-parts", `The "total_parts" value in the "Content-Range" header must be the same than the one you already set for this video.`,
					fmt.Sprintf("The \"total_parts\" you already set for this video is %d.", v.totalParts))
			}
			if cr.part > v.totalParts {
				return bad("video-content-range-by-part-part-too-high-total", `The "part" value in the "Content-Range" header is higher than the "total_parts" value you set for this video.`,
					fmt.Sprintf("The total you already set is %d.", v.totalParts))
			}
			total = v.totalParts
		} else if cr.totalKnown {
			if highest := v.highestPart(); cr.totalParts <= highest {
				return bad("video-content-range-by-part-total-parts-too-low", `The "total_parts" value in the "Content-Range" header is lower than or equal to a part number you already sent for this video.`,
					fmt.Sprintf("Part %d was already sent as a part that is not the last.", highest))
			}
		}
		if _, dup := v.byNumber[cr.part]; dup {
			return bad("video-content-range-by-part-part-already-sent", `The "part" value in the "Content-Range" header collides with a previous one you already sent for this video.`,
				fmt.Sprintf("The part number %d has already been sent.", cr.part))
		}
	}
	last := total > 0 && cr.part == total
	switch {
	case b.size > s.limits.maxPart:
		return newProblem(http.StatusBadRequest, "uploaded-file-too-large", "The uploaded file is too large.", "file",
			fmt.Sprintf("A part must not exceed %d bytes; this one has %d.", s.limits.maxPart, b.size))
	case !last && b.size < s.limits.minPart:
		return newProblem(http.StatusBadRequest, "video-content-range-by-part-uploaded-file-too-small", "The uploaded file is too small.", "file",
			fmt.Sprintf("Every part but the last must have at least %d bytes; part %d has %d.", s.limits.minPart, cr.part, b.size))
	case v != nil && v.size+b.size > s.limits.maxVideo:
		return errVideoTooLarge(s.limits.maxVideo)
	}
	return nil
}

func (s *Server) checkBytes(v *video, cr contentRange, b *uploadBody) *problem {
	bad := func(slug, title, detail string) *problem {
		return newProblem(http.StatusBadRequest, slug, title, "Content-Range", detail)
	}
	length := cr.to - cr.from + 1
	switch {
	case cr.totalBytes == 0:
		return bad("video-content-range-by-bytes-total-bytes-zero", `The "total_bytes" value in the "Content-Range" header must be greater than 0.`, "")
	case cr.totalBytes > s.limits.maxVideo:
		return bad("video-content-range-by-bytes-total-bytes-too-high", `The "total_bytes" value in the "Content-Range" header is higher than the maximum allowed limit.`,
			fmt.Sprintf("The maximum allowed limit is %d.", s.limits.maxVideo))
	case cr.from > cr.to:
		return bad("video-content-range-by-bytes-from-byte-too-high", `The "from_byte" value in the "Content-Range" header is higher than the "to_byte" value.`, "")
	case cr.to >= cr.totalBytes:
		return bad("video-content-range-by-bytes-to-byte-too-high-total", `The "to_byte" value in the "Content-Range" header is higher than the "total_bytes" value you set for this video.`, "")
	case length > s.limits.maxPart:
		return bad("video-content-range-by-bytes-range-too-large", `The range in the "Content-Range" header is too large.`,
			fmt.Sprintf("It must be lower than or equal to %d.", s.limits.maxPart))
	}
	if v != nil {
		switch v.form {
		case formParts:
			return bad("video-content-range-started-with-part", `This "Content-Range" upload has been started with "part", you cannot continue it with "bytes".`, "")
		case formWhole:
			return errAlreadyUploaded()
		}
		if cr.totalBytes != v.totalBytes {
			return bad("video-content-range-by-bytes-different-total-bytes", `The "total_bytes" value in the "Content-Range" header must be the same than the one you already set for this video.`,
				fmt.Sprintf("The \"total_bytes\" you already set for this video is %d.", v.totalBytes))
		}
		for _, c := range v.chunks {
			if cr.from < c.offset+c.size && c.offset <= cr.to {
				return bad("video-content-range-by-bytes-range-overlap", `The range in the "Content-Range" header overlaps with a previous one you already sent for this video.`,
					fmt.Sprintf("It overlaps bytes %d-%d.", c.offset, c.offset+c.size-1))
			}
		}
		if len(v.chunks) >= s.limits.maxParts {
			return bad("video-content-range-by-part-part-too-high-allowed", "The video has too many chunks.",
				fmt.Sprintf("The maximum number of chunks allowed for a video is %d.", s.limits.maxParts))
		}
	}
	if b.size != length {
		return bad("video-content-range-by-bytes-range-mismatch", `The size of the file you sent is different than the range length you set in the "Content-Range" header.`,
			fmt.Sprintf("The size of the file you sent is %d bytes but the range length you set is %d.", b.size, length))
	}
	if last := cr.to == cr.totalBytes-1; !last && length < s.limits.minPart {
		return bad("video-content-range-by-bytes-range-too-small", `The range in the "Content-Range" header is too small.`,
			fmt.Sprintf("It must be greater than or equal to %d, except for the last chunk.", s.limits.minPart))
	}
	return nil
}

// Problems shared by several rules.

func errMissingToken() *problem {
	return newProblem(http.StatusUnauthorized, "authentication-missing-upload-token", "The upload token is missing.", "token", "")
}

func errInvalidToken() *problem {
	return newProblem(http.StatusUnauthorized, "authentication-invalid-upload-token", "The upload token is invalid or expired.", "token", "")
}

func errNoFile() *problem {
	return newProblem(http.StatusBadRequest, "uploaded-file-no-file", "There is no uploaded file in the request.", "file", "")
}

func errMalformedRange() *problem {
	return newProblem(http.StatusBadRequest, "video-content-range-malformed",
		`The value of the "Content-Range" header is malformed, the expected format is "bytes <from_byte>-<to_byte>/<total_bytes>" or "part <part>/<total_parts>".`, "Content-Range", "")
}

func errAlreadyUploaded() *problem {
	return newProblem(http.StatusBadRequest, "video-source-already-uploaded", "This video source has already been uploaded.", "", "")
}

func errVideoTooLarge(limit int64) *problem {
	return newProblem(http.StatusBadRequest, "uploaded-file-too-large", "The video is too large.", "file",
		fmt.Sprintf("A video must not exceed %d bytes.", limit))
}

func invalidPayload(err error) *problem {
	return newProblem(http.StatusBadRequest, "invalid-payload", "The payload is invalid.", "", err.Error())
}

// video is one video being uploaded.
type video struct {
	id, token, title string
	createdAt        time.Time // first chunk accepted
	updatedAt        time.Time
	completedAt      time.Time
	form             rangeForm
	totalParts       int   // part form: declared total, 0 while unknown
	totalBytes       int64 // bytes form
	chunks           []*chunk
	byNumber         map[int]*chunk // part form
	size             int64
	complete         bool
	sum              string // hex SHA-256 of the assembled bytes, when kept
}

// chunk is one accepted chunk.
type chunk struct {
	number int   // part number; arrival index (from 1) for the bytes form
	offset int64 // bytes form: first byte
	size   int64
	sum    [sha256.Size]byte
	hashed bool // sum is set
	at     time.Time
	data   []byte
}

func (v *video) highestPart() int {
	h := 0
	for n := range v.byNumber {
		h = max(h, n)
	}
	return h
}

// add stores an accepted chunk and updates completion.
func (v *video) add(now time.Time, cr contentRange, b *uploadBody, keep bool) {
	c := &chunk{number: len(v.chunks) + 1, size: b.size, sum: b.sum, hashed: b.hashed, at: now}
	if keep {
		c.data = b.data
	}
	v.updatedAt = now
	v.size += b.size
	v.chunks = append(v.chunks, c)
	switch cr.form {
	case formWhole:
		v.complete = true
	case formParts:
		c.number = cr.part
		v.byNumber[cr.part] = c
		if cr.totalKnown {
			v.totalParts = cr.totalParts
		}
		v.complete = v.totalParts > 0 && len(v.byNumber) == v.totalParts
	case formBytes:
		c.offset = cr.from
		v.totalBytes = cr.totalBytes
		v.complete = v.size == v.totalBytes
	}
	if v.complete && keep {
		h := sha256.New()
		for _, c := range v.ordered() {
			h.Write(c.data)
		}
		v.sum = hex.EncodeToString(h.Sum(nil))
	}
}

// ordered returns the chunks in their place in the video.
func (v *video) ordered() []*chunk {
	out := slices.Clone(v.chunks)
	slices.SortFunc(out, func(a, b *chunk) int {
		if v.form == formBytes {
			return cmp.Compare(a.offset, b.offset)
		}
		return cmp.Compare(a.number, b.number)
	})
	return out
}

type videoJSON struct {
	VideoID     string   `json:"videoId"`
	Title       string   `json:"title"`
	Description string   `json:"description"`
	Public      bool     `json:"public"`
	Panoramic   bool     `json:"panoramic"`
	MP4Support  bool     `json:"mp4Support"`
	Tags        []string `json:"tags"`
	Metadata    []string `json:"metadata"`
	CreatedAt   string   `json:"createdAt"`
	UpdatedAt   string   `json:"updatedAt"`
	PublishedAt string   `json:"publishedAt"`
	Source      struct {
		Type string `json:"type"`
		URI  string `json:"uri"`
	} `json:"source"`
	Assets struct {
		Iframe    string `json:"iframe"`
		Player    string `json:"player"`
		HLS       string `json:"hls"`
		Thumbnail string `json:"thumbnail"`
		MP4       string `json:"mp4"`
	} `json:"assets"`
}

func (v *video) json() videoJSON {
	j := videoJSON{
		VideoID: v.id, Title: v.title, Public: true, MP4Support: true,
		Tags: []string{}, Metadata: []string{},
		CreatedAt: apiTime(v.createdAt), UpdatedAt: apiTime(v.updatedAt), PublishedAt: apiTime(v.createdAt),
	}
	j.Source.Type = "upload"
	j.Source.URI = "/videos/" + v.id + "/source"
	a := assetURLs(v.id)
	j.Assets.Iframe = `<iframe src="` + a.Player + `" width="100%" height="100%" frameborder="0" scrolling="no" allowfullscreen="true"></iframe>`
	j.Assets.Player, j.Assets.HLS, j.Assets.Thumbnail, j.Assets.MP4 = a.Player, a.HLS, a.Thumbnail, a.MP4
	return j
}

// Assets are the URLs the server announces for a video.
type Assets struct {
	// Player is https://embed.api.video/vod/{id}.
	Player string
	// HLS is https://cdn.api.video/vod/{id}/hls/manifest.m3u8.
	HLS string
	// Thumbnail is https://cdn.api.video/vod/{id}/thumbnail.jpg.
	Thumbnail string
	// MP4 is https://cdn.api.video/vod/{id}/mp4/source.mp4.
	MP4 string
}

func assetURLs(id string) Assets {
	return Assets{
		Player:    "https://embed.api.video/vod/" + id,
		HLS:       "https://cdn.api.video/vod/" + id + "/hls/manifest.m3u8",
		Thumbnail: "https://cdn.api.video/vod/" + id + "/thumbnail.jpg",
		MP4:       "https://cdn.api.video/vod/" + id + "/mp4/source.mp4",
	}
}

// VideoInfo is a snapshot of what a video received.
type VideoInfo struct {
	// ID is the video's id.
	ID string
	// Token is the upload token that started the video.
	Token string
	// Title is the video's title (the first chunk's file name).
	Title string
	// CreatedAt is when the first chunk was accepted, by the server's clock.
	CreatedAt time.Time
	// Form is "part", "bytes" or "whole" (no Content-Range).
	Form string
	// TotalParts is the declared number of parts (part form); 0 while
	// unknown.
	TotalParts int
	// TotalBytes is the declared size (bytes form).
	TotalBytes int64
	// Parts are the accepted chunks, in arrival order.
	Parts []PartInfo
	// Complete reports whether every chunk up to the last has arrived.
	Complete bool
	// CompletedAt is when the chunk that completed the video had been read
	// in full and accepted, by the server's clock; zero while incomplete.
	// Unlike the chunks' Time (their arrival), it ends with the last byte.
	CompletedAt time.Time
	// Size is the number of bytes received so far.
	Size int64
	// SHA256 is the hex SHA-256 of the assembled video, set when Complete
	// and the server keeps bytes.
	SHA256 string
	// Assets are the URLs announced for the video.
	Assets Assets

	data [][]byte // chunks in video order, when complete and kept
}

// Bytes returns the assembled video when it is complete and the server
// keeps bytes; nil otherwise.
func (v VideoInfo) Bytes() []byte {
	if v.data == nil {
		return nil
	}
	return slices.Concat(v.data...)
}

// PartInfo describes one accepted chunk.
type PartInfo struct {
	// Number is the part number (part form), or the chunk's arrival index
	// from 1 (bytes form; 1 for a whole upload).
	Number int
	// Offset is the chunk's first byte (bytes form; 0 otherwise).
	Offset int64
	// Size is the chunk's length in bytes.
	Size int64
	// SHA256 is the hex SHA-256 of the chunk; empty when the server does
	// not hash (WithHashing).
	SHA256 string
	// Time is when the chunk was accepted, by the server's clock.
	Time time.Time
}

func (v *video) info() VideoInfo {
	in := VideoInfo{
		ID: v.id, Token: v.token, Title: v.title, CreatedAt: v.createdAt, Form: v.form.String(),
		TotalParts: v.totalParts, TotalBytes: v.totalBytes, Complete: v.complete, Size: v.size,
		CompletedAt: v.completedAt, SHA256: v.sum, Assets: assetURLs(v.id),
	}
	for _, c := range v.chunks {
		p := PartInfo{Number: c.number, Offset: c.offset, Size: c.size, Time: c.at}
		if c.hashed {
			p.SHA256 = hex.EncodeToString(c.sum[:])
		}
		in.Parts = append(in.Parts, p)
	}
	if v.complete && v.sum != "" {
		for _, c := range v.ordered() {
			in.data = append(in.data, c.data)
		}
	}
	return in
}

// Videos returns a snapshot of every video, in creation order.
func (s *Server) Videos() []VideoInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]VideoInfo, 0, len(s.videoList))
	for _, v := range s.videoList {
		out = append(out, v.info())
	}
	return out
}

// Video returns a snapshot of the video with the given id.
func (s *Server) Video(id string) (VideoInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.videos[id]
	if !ok {
		return VideoInfo{}, false
	}
	return v.info(), true
}
