from app.core.errors import Conflict


class LastSuperuserError(Conflict):
    code, detail = "last_superuser", "The last active superuser cannot be demoted, deactivated or deleted."


class SoleOwnerError(Conflict):
    code, detail = (
        "sole_owner",
        "This user is the only owner of one or more organizations; transfer them first, or delete them "
        "together with the user (?force=true).",
    )
