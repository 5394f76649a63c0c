from app.core.errors import Conflict, NotFound


class UserNotFoundError(NotFound):
    code, detail = "user_not_found", "User not found."


class EmailTakenError(Conflict):
    code, detail = "email_taken", "An account with this email already exists."


class ManagedBySupabaseError(Conflict):
    code, detail = "managed_by_supabase", "This account's email is managed by Supabase; change it there."


class ProfileNotFoundError(NotFound):
    code, detail = "profile_not_found", "No profile exists yet; create it with POST /profile."


class LastSuperuserError(Conflict):
    code, detail = "last_superuser", "The last active superuser cannot be demoted, deactivated or deleted."
