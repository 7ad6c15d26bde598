package webhook

import (
	"maps"
	"time"

	"github.com/tusgate/tusgate/auth"
	"github.com/tusgate/tusgate/store"
)

// Request headers of every webhook POST.
const (
	// HeaderSignature holds the lowercase hex HMAC-SHA256 of the raw body,
	// keyed with the webhook secret (see Sign and Verify).
	HeaderSignature = auth.SignatureHeader
	// HeaderEventID repeats the body's id: the same on every retry.
	HeaderEventID = "X-Tusgate-Event-Id"
	// HeaderEventType repeats the body's type.
	HeaderEventType = "X-Tusgate-Event-Type"
	// HeaderAttempt is 1 on the first delivery of an event, 2 on the
	// first retry, and so on (not signed: informational).
	HeaderAttempt = "X-Tusgate-Delivery-Attempt"
)

// Payload is the JSON body of a webhook request.
//
//	{
//	  "id": "evt_pw4bwvkkyc6xq7kwdkvuhulqje",
//	  "type": "video.delivered",
//	  "createdAt": "2026-11-27T07:52:50Z",
//	  "upload": {
//	    "id": "5cec5ec8399270bef83dd460cb29bcf7",
//	    "state": "delivered",
//	    "size": 12582912,
//	    "received": 12582912,
//	    "delivered": 12582912,
//	    "filename": "holiday.mp4",
//	    "filetype": "video/mp4",
//	    "metadata": {"userId": "42"},
//	    "createdAt": "2026-11-27T07:52:49Z"
//	  },
//	  "video": {
//	    "videoId": "vi4k0jvEUuaTdRAEjQ4Jfrgz",
//	    "assets": {
//	      "player": "https://embed.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz",
//	      "hls": "https://vod.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz/hls/manifest.m3u8",
//	      "thumbnail": "https://vod.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz/thumbnail.jpg",
//	      "mp4": "https://vod.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz/mp4/source.mp4"
//	    }
//	  },
//	  "error": null
//	}
//
// Every key is always present. The upload's state, size, received and
// delivered bytes, video and error are as they were when the event happened
// (a retried upload.created still says "receiving").
type Payload struct {
	// ID identifies the event; retries repeat it: de-duplicate on it.
	ID string `json:"id"`
	// Type is upload.created, upload.received, video.delivered,
	// upload.failed or upload.terminated.
	Type store.EventType `json:"type"`
	// CreatedAt is when the event happened (UTC).
	CreatedAt time.Time     `json:"createdAt"`
	Upload    PayloadUpload `json:"upload"`
	// Video is null until api.video accepted part 1 (so always set on
	// video.delivered; on upload.failed, when the failure came after it).
	Video *PayloadVideo `json:"video"`
	// Error is set on upload.failed (and on a later upload.terminated).
	Error *store.Failure `json:"error"`
}

// PayloadUpload describes the upload in a Payload, with the field names of
// the status API (GET /uploads/{id}).
type PayloadUpload struct {
	// ID is the tus upload id, the last path segment of the upload URL.
	ID    string      `json:"id"`
	State store.State `json:"state"`
	// Size is null while the length is deferred.
	Size *int64 `json:"size"`
	// Received is the number of bytes durably stored.
	Received int64 `json:"received"`
	// Delivered is the number of bytes api.video accepted.
	Delivered int64   `json:"delivered"`
	Filename  *string `json:"filename"`
	Filetype  *string `json:"filetype"`
	// Metadata is the client's Upload-Metadata other than the filename,
	// filetype and api.video token (never sent): {} when none.
	Metadata  map[string]string `json:"metadata"`
	CreatedAt time.Time         `json:"createdAt"`
}

// PayloadVideo is the api.video video of an upload.
type PayloadVideo struct {
	VideoID string        `json:"videoId"`
	Assets  PayloadAssets `json:"assets"`
}

// PayloadAssets are the video's URLs as api.video returned them; null when
// unknown (the status API's form).
type PayloadAssets = store.AssetURLs

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// NewPayload returns the body of event ev of upload u: the event's snapshot,
// and u's immutable fields (filename, filetype, metadata, creation time).
func NewPayload(u *store.Upload, ev store.Event) Payload {
	p := Payload{
		ID:        ev.ID,
		Type:      ev.Type,
		CreatedAt: ev.CreatedAt.UTC(),
		Upload: PayloadUpload{
			ID:        u.ID,
			State:     ev.State,
			Received:  ev.Received,
			Delivered: ev.DeliveredBytes,
			Filename:  strOrNil(u.Filename),
			Filetype:  strOrNil(u.Filetype),
			Metadata:  maps.Clone(u.Metadata),
			CreatedAt: u.CreatedAt.UTC(),
		},
	}
	if p.Upload.Metadata == nil {
		p.Upload.Metadata = map[string]string{}
	}
	if !ev.SizeDeferred {
		size := ev.Size
		p.Upload.Size = &size
	}
	if ev.VideoID != "" {
		p.Video = &PayloadVideo{VideoID: ev.VideoID, Assets: ev.Assets.URLs()}
	}
	if ev.Error != (store.Failure{}) {
		f := ev.Error
		p.Error = &f
	}
	return p
}

// Sign returns the value of HeaderSignature for body: the lowercase hex
// HMAC-SHA256 of the raw body, keyed with secret.
func Sign(secret, body []byte) string { return auth.BodySignature(secret, body) }

// Verify reports whether header (the received HeaderSignature, hex in any
// case) is the signature of body under secret. It compares in constant
// time. Receivers must verify the raw body, before parsing it. The scheme
// is the auth hook's (auth.VerifyBodySignature), so a platform checks both
// with one function.
func Verify(secret, body []byte, header string) bool {
	return auth.VerifyBodySignature(secret, body, header)
}
