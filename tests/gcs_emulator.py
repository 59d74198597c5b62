"""`python tests/gcs_emulator.py start ...`: gcp-storage-emulator, with the generation headers that
its downloads lack. Real GCS sends `x-goog-generation` with every object read; tensorstore's
OCDBT reads its manifest back and refuses a reply without one ("Malformed StorageGeneration")."""

import sys

from gcp_storage_emulator.handlers import objects

_download = objects.download


def download(request, response, storage, *args, **kwargs):
    try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        response["x-goog-generation"] = str(obj["generation"])
        response["x-goog-metageneration"] = str(obj["metageneration"])
    except Exception:  # a missing object: the emulator's own handler answers 404
        pass
    return _download(request, response, storage, *args, **kwargs)


objects.download = download  # before the server module builds its routes

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main

    main(sys.argv[1:])
